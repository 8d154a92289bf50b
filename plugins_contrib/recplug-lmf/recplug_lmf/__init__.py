"""recplug-gmu: Gated Multimodal Unit fusion for recplug (entry point ``gmu`` -> :mod:`recplug_gmu.plugin`)."""

from recplug_gmu.plugin import GMUFusion

__version__ = "0.1.0"
__all__ = ["GMUFusion", "__version__"]
