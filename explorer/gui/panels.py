"""The panels beyond the foundation's views, each added as a tab of the main window."""
from __future__ import annotations


def add_panels(window) -> None:
    """Add every optional panel (live, attribution, LSTM) to ``window``, then number the View menu."""
    from .live_panel import add_live_view  # noqa: PLC0415

    window.live_panel = add_live_view(window)
    window.refresh_view_menu()
