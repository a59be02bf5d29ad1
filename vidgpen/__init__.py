"""vidgpen: restore faces in videos and photos with GPEN.

Library entry points (imported lazily so ``import vidgpen`` stays cheap):

- :func:`vidgpen.load_restorer` -- load any official GPEN checkpoint into a fast batched restorer.
- :func:`vidgpen.restore_video` / :func:`vidgpen.restore_image` -- the whole pipeline.
"""

from vidgpen.errors import InputError, OptionError, OutputError, VidgpenError, WeightsError

__version__ = "0.1.0"

_LAZY = {
    "load_restorer": ("vidgpen.models.restorer", "load_restorer"),
    "GPENRestorer": ("vidgpen.models.restorer", "GPENRestorer"),
    "restore_video": ("vidgpen.api", "restore_video"),
    "restore_image": ("vidgpen.api", "restore_image"),
}

__all__ = [
    "VidgpenError", "WeightsError", "InputError", "OutputError", "OptionError", "__version__", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'vidgpen' has no attribute {name!r}")
