"""Modality fusion plugins (hook ``recplug_fuse``)."""

from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.gmu import GatedFusion
from recplug.plugins.fusion.rca import RCAFusion, RCALayer
from recplug.plugins.fusion.sum import SumFusion
from recplug.plugins.fusion.tokens import TokenAttentionFusion

__all__ = ["ConcatFusion", "GatedFusion", "RCAFusion", "RCALayer", "SumFusion", "TokenAttentionFusion"]
