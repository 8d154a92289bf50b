"""recplug-align: the DirectAU alignment and uniformity loss for recplug (entry point ``align``)."""

from recplug_align.plugin import AlignUniformLoss, alignment, uniformity

__version__ = "0.1.0"
__all__ = ["AlignUniformLoss", "alignment", "uniformity", "__version__"]
