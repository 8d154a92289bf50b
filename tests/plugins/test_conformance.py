"""Every built-in component passes ``recplug.testing.check_component``: repr, shapes, finite outputs, a
gradient to every parameter, and a restored copy that reproduces the trained model (what a resumed run needs)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from recplug.core.model.components import RecComponent
from recplug.plugins.combine import ConcatCombiner, SumCombiner
from recplug.plugins.embedding import ContentView, IdEmbedding
from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.gmu import GatedFusion
from recplug.plugins.fusion.rca import RCAFusion
from recplug.plugins.fusion.sum import SumFusion
from recplug.plugins.fusion.tokens import TokenAttentionFusion
from recplug.plugins.graphs.item_item import ItemItemGraph
from recplug.plugins.graphs.ngcf import NGCFGraph
from recplug.plugins.graphs.user_item import UserItemGraph
from recplug.plugins.losses.content_bpr import ContentBPRLoss
from recplug.plugins.losses.infonce import InfoNCELoss
from recplug.plugins.losses.l2 import L2Regularization
from recplug.plugins.losses.ultragcn import UltraGCNLoss
from recplug.testing import check_component


def dual_graph() -> dict[str, Any]:
    return {"fusion": SumFusion(), "encoders": [UserItemGraph(num_layers=2), ItemItemGraph(k=5)]}


CASES: dict[str, tuple[Callable[[], RecComponent], Callable[[], dict[str, Any]]]] = {
    "RCAFusion": (lambda: RCAFusion(num_recursions=2, dropout=0.1), dict),
    "RCAFusion-trainable": (lambda: RCAFusion(trainable_features=True, shared_weights=True), dict),
    "ConcatFusion": (ConcatFusion, dict),
    "SumFusion": (SumFusion, dict),
    "GatedFusion": (lambda: GatedFusion(dropout=0.1), dict),
    "GatedFusion-trainable": (lambda: GatedFusion(trainable_features=True), dict),
    "TokenAttentionFusion": (lambda: TokenAttentionFusion(num_heads=2, dropout=0.1), dict),
    "UserItemGraph": (lambda: UserItemGraph(num_layers=2), dict),
    "UserItemGraph-pruned": (lambda: UserItemGraph(num_layers=2, edge_drop=0.5), dict),
    "ItemItemGraph": (lambda: ItemItemGraph(k=5), dict),
    "ItemItemGraph-learned": (lambda: ItemItemGraph(k=5, source="id", learned_weight=0.1, user_profiles=False), dict),
    "ItemItemGraph-refined": (lambda: ItemItemGraph(k=5, source="both", learned_weight=1.0, learned_from="refined",
                                                    rebuild_every=2, profile_norm="symmetric"), dict),
    "ItemItemGraph-refined-mixed": (lambda: ItemItemGraph(k=5, learned_weight=0.1, learned_from="refined",
                                                          profile_from="input"), lambda: {"fusion": RCAFusion()}),
    "NGCFGraph": (lambda: NGCFGraph(num_layers=2), dict),
    "IdEmbedding": (IdEmbedding, dict),
    "ContentView": (ContentView, dict),
    "SumCombiner": (SumCombiner, dict),
    "ConcatCombiner": (ConcatCombiner, dict),
    "InfoNCELoss": (InfoNCELoss, dual_graph),
    "L2Regularization": (L2Regularization, dict),
    "ContentBPRLoss": (ContentBPRLoss, lambda: {"fusion": SumFusion(), "encoders": [UserItemGraph()]}),
    "UltraGCNLoss": (lambda: UltraGCNLoss(num_negatives=8), lambda: {"bpr_weight": 0.0}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_builtin_component_conforms(case: str, tiny_data) -> None:
    make_component, make_slots = CASES[case]
    check_component(make_component(), tiny_data, **make_slots())


def test_check_component_catches_a_parameter_no_loss_reaches(tiny_data) -> None:
    class Unused(SumFusion):
        def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
            super().build(feature_dims, embedding_dim)
            self.forgotten = torch.nn.Linear(2, 2)

    with pytest.raises(AssertionError, match="forgotten"):
        check_component(Unused(), tiny_data)


def test_check_component_catches_state_a_resume_would_lose(tiny_data) -> None:
    class Amnesic(SumFusion):
        """Keeps a trained-looking offset in a plain attribute: not in the state_dict, not rebuilt."""

        def recplug_fuse(self) -> torch.Tensor:
            if self.training:
                self.offset = 1.0
            return super().recplug_fuse() + getattr(self, "offset", 0.0)

    with pytest.raises(AssertionError, match="state lost on resume"):
        check_component(Amnesic(), tiny_data)
