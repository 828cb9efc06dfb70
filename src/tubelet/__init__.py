"""tubelet: video understanding and generation on PyTorch.

`tubelet.create_model` and `tubelet.list_models` are loaded on first use, so that importing a lower
layer (`tubelet.io`, `tubelet.data`) does not build the model registry.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from tubelet import models

        return getattr(models, name)
    raise AttributeError(f"module 'tubelet' has no attribute {name!r}")
