"""Modality fusion plugins (hook ``recplug_fuse``)."""

from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.gmu import GatedFusion
from recplug.plugins.fusion.rca import RCAFusion, RCALayer
from recplug.plugins.fusion.sum import SumFusion

__all__ = ["ConcatFusion", "GatedFusion", "RCAFusion", "RCALayer", "SumFusion"]
