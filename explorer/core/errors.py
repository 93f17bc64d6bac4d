"""Errors that carry one clear, user-facing sentence (shown in a dialog or printed as one line)."""
from __future__ import annotations


class ExplorerError(Exception):
    """Base class: ``str(error)`` is the message a user sees, with no traceback."""


class ModelLoadError(ExplorerError):
    """A model name or checkpoint file could not be turned into a model."""


class WeightsDownloadError(ExplorerError):
    """Pretrained weights could not be fetched (offline, server error, corrupt file).

    ``random_weights_fallback`` is True when going on with random (untrained) weights makes sense
    (offline, a corrupt download); the window then offers it, the command line names ``--weights none``.
    """

    def __init__(self, message: str, random_weights_fallback: bool = False):
        super().__init__(message)
        self.random_weights_fallback = random_weights_fallback


class InputError(ExplorerError):
    """An input (image, .npy tensor, folder) could not be read or does not fit the model."""


class Cancelled(ExplorerError):
    """Long work stopped because the user asked it to."""


class UnknownArchitectureError(ModelLoadError):
    """A state dict matches no known architecture; the user must name it."""


class UntrustedCheckpointError(ModelLoadError):
    """A checkpoint holds pickled Python objects; loading it runs code, so the user must trust it first."""


class OutputError(ExplorerError):
    """A destination file or folder cannot be written (checked before the work starts)."""


class ResourceLimitError(ExplorerError):
    """A request needs more memory (or pixels) than the limit allows; nothing was allocated for it.

    ``setting`` names the environment variable that changes the limit.
    """

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class ImageTooLargeError(InputError):
    """An image has more pixels than the decoding limit (a decompression bomb, or a huge scan)."""
