"""Loading models: torchvision's zoo by name, the bundled CNNs, the user's checkpoints.

Every loader returns a :class:`LoadedModel`: the module in eval mode on its device, and the
:class:`InputSpec` that says how to feed it. The modules:

- ``spec``: :class:`InputSpec`, :class:`LoadedModel`, labels files
- ``zoo``: torchvision's classification models by name
- ``checkpoint``: the user's files (TorchScript, .pt2, state dicts, safetensors, the bundled format)
- ``architecture``: which architecture a state dict is, by tensor names and shapes
- ``download``: pretrained weights into torch.hub's cache
- ``device``: CUDA, MPS or the CPU
- ``shapes`` / ``shapes_data``: the bundled shapes CNN and the images it was trained on
- ``load``: :func:`load_model`, the one entry point the command line and the window use
"""
from explorer.core.models.load import (BUNDLED_MODELS, DEFAULT_MODEL, bundled_names, load_bundled_model, load_model,
                                       load_model_steps, load_zoo_model)
from explorer.core.models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec, LoadedModel, ProgressFn, read_labels_file
from explorer.core.models.zoo import build_zoo_model, load_zoo_model_steps, zoo_names, zoo_spec
from explorer.core.resources import RESOURCES

__all__ = ["BUNDLED_MODELS", "DEFAULT_MODEL", "IMAGENET_MEAN", "IMAGENET_STD", "RESOURCES", "InputSpec", "LoadedModel",
           "ProgressFn", "build_zoo_model", "bundled_names", "load_bundled_model", "load_model", "load_model_steps",
           "load_zoo_model", "load_zoo_model_steps", "read_labels_file", "zoo_names", "zoo_spec"]
