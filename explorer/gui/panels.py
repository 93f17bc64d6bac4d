"""The panels beyond the foundation's views, each added as a tab of the main window."""
from __future__ import annotations

from explorer.core.models import RESOURCES

SAMPLE_TEXT = RESOURCES / "text" / "threading_sample.py"


def add_panels(window) -> None:
    """Add every optional panel (live, attribution, LSTM) to ``window``, then number the View menu."""
    from .live_panel import add_live_view  # noqa: PLC0415

    window.live_panel = add_live_view(window)
    window.lstm_panel = add_lstm_view(window)
    window.refresh_view_menu()


def add_lstm_view(window):
    """The LSTM tab; its model and sample text load the first time the tab is shown (or ``open_text``)."""
    from .lstm_panel import LstmPanel  # noqa: PLC0415

    panel = LstmPanel(window)
    window.add_view("lstm", "LSTM", panel)
    panel.statusChanged.connect(window.statusBar().showMessage)

    def ensure_loaded(_index: int = -1) -> None:
        if panel.model is None and window.tabs.currentWidget() is panel:
            panel.load_model("bundled")
            if not panel.view.text():
                panel.open_text_file(SAMPLE_TEXT)

    window.tabs.currentChanged.connect(ensure_loaded)
    return panel
