"""recplug's built-in plugins, registered through the same path as third-party ones. The views and
combiners every bundle can use live here; fusion, graph encoders and losses in their sub-packages."""

from recplug.plugins.combine import ConcatCombiner, SumCombiner
from recplug.plugins.embedding import ContentView, IdEmbedding

__all__ = ["ConcatCombiner", "ContentView", "IdEmbedding", "SumCombiner"]
