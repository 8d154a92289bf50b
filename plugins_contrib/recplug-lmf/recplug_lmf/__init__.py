"""recplug-lmf: Low-rank Multimodal Fusion for recplug (entry point ``lmf`` -> :mod:`recplug_lmf.plugin`)."""

from recplug_lmf.plugin import LMFFusion

__version__ = "0.1.0"
__all__ = ["LMFFusion", "__version__"]
