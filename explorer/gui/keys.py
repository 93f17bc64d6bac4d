"""Every key binding of the window, in one place (as the Deep Visualization Toolbox keeps its bindings).

The window and the panels make their QActions and QShortcuts from :data:`BINDINGS` (:func:`sequence`),
and F1's table and README's "Keyboard shortcuts" table are generated from it (:func:`help_rows`,
:func:`markdown_table`), so the help cannot drift from the keys. ``shortcut=False`` marks keys and
mouse gestures a widget handles itself (arrows in the grid, drag in the LSTM text): listed, not bound.

Qt-free: ``python -m explorer.gui.keys`` prints README's table.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_VIEWS = 9  # Ctrl+1 … Ctrl+9 show the first nine tabs


@dataclass(frozen=True)
class Binding:
    """``keys`` in Qt's portable text (``QKeySequence("Ctrl+O")``; Ctrl is Command on macOS)."""

    name: str
    keys: tuple[str, ...]
    action: str
    where: str = "window"
    shortcut: bool = True  # False: handled by a widget (keyPressEvent, mouse), listed in the help only


VIEW_KEYS = tuple(f"Ctrl+{i}" for i in range(1, MAX_VIEWS + 1))

BINDINGS: tuple[Binding, ...] = (
    Binding("open_image", ("Ctrl+O",), "open an image"),
    Binding("open_folder", ("Ctrl+Shift+O",), "open a folder of images"),
    Binding("paste_image", ("Ctrl+V",), "paste an image"),
    Binding("next_image", ("PgDown",), "next image in the folder"),
    Binding("previous_image", ("PgUp",), "previous image in the folder"),
    Binding("export_view", ("Ctrl+E",), "export the view as PNG"),
    Binding("export_window", ("Ctrl+Shift+E",), "export the whole window as PNG"),
    Binding("quit", ("Ctrl+Q",), "quit"),
    Binding("open_model", ("Ctrl+M",), "open a model file"),
    Binding("input_settings", ("Ctrl+I",), "input settings (size, mean, std, labels)"),
    Binding("next_layer", ("Ctrl+Down",), "next layer"),
    Binding("previous_layer", ("Ctrl+Up",), "previous layer"),
    Binding("cancel", ("Esc",), "cancel a download or a long computation"),
    Binding("show_view", VIEW_KEYS, "show a view (Activations, Filters, …)"),
    Binding("shortcuts", ("F1",), "list the shortcuts"),
    Binding("layer_keys", ("Up", "Down"), "previous / next layer", "layer table", shortcut=False),
    Binding("unit_keys", ("Left", "Right", "Up", "Down", "Home", "End"), "select a unit (a click on a tile too)",
            "Activations", shortcut=False),
    Binding("overlay", ("O",), "overlay the selected unit on the input", "Activations", shortcut=False),
    Binding("live_freeze", ("Space",), "freeze or unfreeze", "Live tab"),
    Binding("live_step", (".",), "step one frame", "Live tab"),
    Binding("live_mirror", ("M",), "mirror the camera", "Live tab"),
    Binding("live_click", ("click",), "select the unit of a tile of the grid", "Live tab", shortcut=False),
    Binding("topk_view", ("D",), "patches: image / guided backprop / deconvnet", "Top images tab"),
    Binding("lstm_analyse", ("Ctrl+Return",), "analyse the edited text", "LSTM tab"),
    Binding("lstm_mouse", ("hover", "drag", "Ctrl+drag"), "value and next characters / select a span / add a span",
            "LSTM tab", shortcut=False),
)

_BY_NAME = {b.name: b for b in BINDINGS}


def binding(name: str) -> Binding:
    return _BY_NAME[name]


def sequence(name: str) -> str:
    """The one key of binding ``name``, for ``QKeySequence(...)``."""
    keys = _BY_NAME[name].keys
    if len(keys) != 1:
        raise ValueError(f"binding {name!r} has {len(keys)} keys; use binding({name!r}).keys")
    return keys[0]


def view_sequence(index: int) -> str | None:
    """The key that shows tab ``index`` (0-based), or None past the ninth."""
    return VIEW_KEYS[index] if index < len(VIEW_KEYS) else None


def keys_text(b: Binding) -> str:
    if b.keys == VIEW_KEYS:
        return f"{VIEW_KEYS[0]} … {VIEW_KEYS[-1]}"
    return " / ".join(b.keys)


def help_rows() -> list[tuple[str, str, str]]:
    """(keys, action, where) for every binding: F1's table and README's."""
    return [(keys_text(b), b.action, b.where) for b in BINDINGS]


def markdown_table() -> str:
    """README's "Keyboard shortcuts" table."""
    lines = ["| keys | action | where |", "|---|---|---|"]
    lines += [f"| {k} | {a} | {w} |" for k, a, w in help_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
