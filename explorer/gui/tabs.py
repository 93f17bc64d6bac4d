"""The panels beyond the foundation's views, each added as a tab of the main window."""
from __future__ import annotations

from PySide6.QtCore import Qt

from explorer.core.resources import SAMPLE_TEXT


def add_panels(window) -> None:
    """Add every optional panel (attribution, live, LSTM, costs) to ``window``, then number the View menu."""
    from explorer.gui.panels.costs import add_costs_view  # noqa: PLC0415
    from explorer.gui.panels.live import add_live_view  # noqa: PLC0415

    window.attribution_panel = add_attribution_view(window)
    window.live_panel = add_live_view(window)
    window.lstm_panel = add_lstm_view(window)
    window.topk_panel = add_topk_view(window)
    window.embed_panel = add_embed_view(window)
    window.optimize_panel = add_optimize_view(window)
    window.costs_panel = add_costs_view(window)
    window.compare_panel = add_compare_view(window)
    window.refresh_view_menu()
    # the layer table needs about 390 px (own names, compact counts); the rest goes to the centre
    window.resizeDocks([window.layers_dock, window.input_dock], [390, 290], Qt.Horizontal)


def add_lstm_view(window):
    """The LSTM tab; its model and sample text load the first time the tab is shown (or ``open_text``)."""
    from explorer.gui.panels.lstm import LstmPanel  # noqa: PLC0415

    panel = LstmPanel(window)
    window.add_view("lstm", "LSTM", panel)  # its statistics and messages: its own status line, once

    docks_shown = {}

    def ensure_loaded(_index: int = -1) -> None:
        # the layer table, the image input, the CNN toolbar and the CNN status fields say nothing about a
        # text model: hidden while it is shown, as they were when it is left (isHidden: the window may not
        # be shown yet when --view lstm opens the tab)
        on_lstm = window.current_view() is panel
        for widget in (window.layers_dock, window.input_dock, window.model_toolbar, window.model_label,
                       window.device_label, window.device_combo):
            if on_lstm:
                docks_shown.setdefault(widget, not widget.isHidden())
                widget.hide()
            elif widget in docks_shown:
                widget.setVisible(docks_shown.pop(widget))
        if on_lstm:
            window.statusBar().clearMessage()  # a CNN message ("loaded ...") says nothing here
        if panel.model is None and on_lstm:
            panel.load_model("bundled")
            if not panel.view.text():
                panel.open_text_file(SAMPLE_TEXT)

    window.tabs.currentChanged.connect(ensure_loaded)
    return panel


def add_attribution_view(window):
    """The Attribution tab: explains the window's input; a click in the top-5 or on a unit sets the target."""
    from explorer.gui.panels.attribution import AttributionPanel  # noqa: PLC0415

    panel = AttributionPanel(window)
    window.add_view("attribution", "Attribution", panel)
    window.input_changed.connect(panel.set_context)  # the worker moves x to the model's device
    window.input_panel.class_selected.connect(panel.set_target_class)
    window.activations.unit_selected.connect(lambda unit: panel.set_target_unit(window.layer, unit))
    panel.failed.connect(window.show_error)

    def compute_when_shown(_index: int = -1) -> None:
        # the first look at the tab shows a map at once (the default method is a fast gradient method)
        if window.current_view() is panel and panel.result is None and not panel.busy:
            panel.compute()

    window.tabs.currentChanged.connect(compute_when_shown)
    window.input_changed.connect(lambda *_: compute_when_shown())
    return panel


def add_optimize_view(window):
    """The Optimize tab: class models, unit visualisation, DeepDream and inversion of the window's input;
    the target follows the explorer's class (top-5 click) and unit (activation grid click)."""
    from explorer.gui.panels.optimize import OptimizePanel  # noqa: PLC0415

    panel = OptimizePanel(window)
    window.add_view("optimize", "Optimize", panel)
    window.input_changed.connect(panel.set_context)
    window.input_panel.class_selected.connect(panel.set_target_class)
    window.activations.unit_selected.connect(lambda unit: panel.set_target_unit(window.layer, unit))
    panel.failed.connect(window.show_error)
    return panel


def add_topk_view(window):
    """The Top images tab: the selected unit's top-9 patches in the window's folder (follows layer and unit)."""
    from explorer.gui.panels.topk import TopKPanel  # noqa: PLC0415

    panel = TopKPanel(window)
    window.add_view("topk", "Top images", panel)
    panel.failed.connect(window.show_error)
    window.activations.unit_selected.connect(lambda _unit: panel.refresh())
    window.layers.layer_selected.connect(lambda _layer: panel.ensure() if window.current_view() is panel else None)
    window.tabs.currentChanged.connect(lambda _i: panel.ensure() if window.current_view() is panel else None)
    window.input_changed.connect(lambda *_: panel.ensure() if window.current_view() is panel else None)
    return panel


def add_embed_view(window):
    """The Map tab: the t-SNE map of the window's folder's codes; a click on a thumbnail opens the image."""
    from explorer.gui.panels.embed import EmbedPanel  # noqa: PLC0415

    panel = EmbedPanel(window)
    window.add_view("map", "Map", panel)
    panel.failed.connect(window.show_error)
    window.tabs.currentChanged.connect(lambda _i: panel.ensure() if window.current_view() is panel else None)
    window.input_changed.connect(lambda *_: panel.ensure() if window.current_view() is panel else None)
    return panel


def add_compare_view(window):
    """The Compare tab: the window's model (A) beside a second checkpoint (B); the top-5 follow the input."""
    from explorer.gui.panels.compare import ComparePanel  # noqa: PLC0415

    panel = ComparePanel(window)
    window.add_view("compare", "Compare", panel)
    panel.failed.connect(window.show_error)
    window.input_changed.connect(panel.refresh_image)
    window.activations.unit_selected.connect(lambda _unit: panel.refresh_image())
    return panel
