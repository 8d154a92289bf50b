"""recplug: a plugin-based PyTorch Lightning framework for multimodal and graph-based recommendation."""

from recplug.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
