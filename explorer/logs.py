"""Where details go that a user should not have to read: one log file (Qt-free, shared by CLI and GUI).

Everything logs to the ``"explorer"`` logger. :func:`setup_logging` sends it to a file in the user's
state folder: ``$DEEP_EXPLORER_LOG`` when set, else ``$XDG_STATE_HOME/deep-explorer/deep-explorer.log``,
else ``~/.local/state/deep-explorer/deep-explorer.log``. With ``verbose`` the records also go to stderr.
An unexpected exception is printed as one line that names the log file; its traceback is in the file.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGER_NAME = "explorer"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_path() -> Path:
    """The log file named by ``DEEP_EXPLORER_LOG`` or the XDG state folder (not created here)."""
    override = os.environ.get("DEEP_EXPLORER_LOG")
    if override:
        return Path(override).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "deep-explorer" / "deep-explorer.log"


def setup_logging(verbose: bool = False) -> Path | None:
    """Send the ``explorer`` logger to the log file (and stderr when ``verbose``); return the file.

    Returns None when the file cannot be created (a read-only home): logging then goes to stderr only
    when ``verbose``. Calling it again replaces the handlers it added before.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, "_deep_explorer", False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    path: Path | None = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        path = None
    else:
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler._deep_explorer = True  # type: ignore[attr-defined]
        logger.addHandler(file_handler)
    if verbose:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.DEBUG)
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        stream._deep_explorer = True  # type: ignore[attr-defined]
        logger.addHandler(stream)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return path


def get_logger(name: str = "") -> logging.Logger:
    """``explorer`` or a child of it (``get_logger("cli")`` → ``explorer.cli``)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
