"""The tabs of the main window, one module per panel."""
