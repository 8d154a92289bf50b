"""Graph encoder plugins (hook ``recplug_encode``)."""

from recplug.plugins.graphs.item_item import ItemItemGraph
from recplug.plugins.graphs.ngcf import NGCFGraph
from recplug.plugins.graphs.user_item import UserItemGraph

__all__ = ["ItemItemGraph", "NGCFGraph", "UserItemGraph"]
