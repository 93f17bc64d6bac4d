"""Widgets the main window and the panels are built from, one module per widget."""
