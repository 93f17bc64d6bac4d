"""Subcommands of the foundation: ``layers``, ``predict``, ``activations``."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    pass
