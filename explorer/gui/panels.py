"""The panels beyond the foundation's views, each added as a tab of the main window."""
from __future__ import annotations


def add_panels(window) -> None:
    """Add every optional panel (attribution, live, LSTM) that is available to ``window``."""
    window.refresh_view_menu()
