"""Auxiliary loss plugins (hook ``recplug_aux_loss``)."""

from recplug.plugins.losses.content_bpr import ContentBPRLoss
from recplug.plugins.losses.infonce import InfoNCELoss
from recplug.plugins.losses.l2 import L2Regularization
from recplug.plugins.losses.ultragcn import UltraGCNLoss

__all__ = ["ContentBPRLoss", "InfoNCELoss", "L2Regularization", "UltraGCNLoss"]
