"""Every built-in component passes ``recplug.testing.check_component``: repr, shapes, finite outputs, a
gradient to every parameter, a restored copy that reproduces the trained model (what a resumed run needs), and a
reset_parameters that re-draws every trained weight."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from recplug.core.cli.main import main
from recplug.core.errors import MAX_COUNT, MAX_EMBEDDING_DIM, MAX_LAYERS, InvalidArgument
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


def test_check_component_catches_a_parameter_reset_parameters_misses(tiny_data) -> None:
    class OwnScale(SumFusion):
        def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
            super().build(feature_dims, embedding_dim)
            self.scale = torch.nn.Parameter(torch.ones(embedding_dim))

        def recplug_fuse(self) -> torch.Tensor:
            return super().recplug_fuse() * self.scale

    with pytest.raises(AssertionError, match=r"reset_parameters leaves OwnScale parameters \['scale'\] as trained"):
        check_component(OwnScale(), tiny_data)


def test_the_model_reset_re_draws_every_learned_weight_and_keeps_the_features(tiny_data) -> None:
    from recplug.core.model.module import RecModule

    model = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, embedding_dim=8,
                      fusion=ConcatFusion(trainable_features=True), encoders=[IdEmbedding(), ContentView()],
                      combiner=ConcatCombiner())
    model.prepare(tiny_data, None)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.reset_parameters()
    same = sorted(name for name, p in model.named_parameters() if torch.equal(p, before[name]))
    assert same == ["fusion.raw_image", "fusion.raw_text"]


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


BAD_ARGUMENTS: dict[str, tuple[Callable[[], RecComponent], str]] = {
    "modalities-int": (lambda: ConcatFusion(modalities=0), "ConcatFusion: modalities must be a list of modality names, "
                                                           "got 0"),
    "trainable-text": (lambda: SumFusion(trainable_features="abc"),
                       "SumFusion: trainable_features must be true or false, got 'abc'"),
    "view-name-empty": (lambda: UserItemGraph(name=""), "UserItemGraph: name must be a non-empty string, got ''"),
    "k-float": (lambda: ItemItemGraph(k=2.5), "ItemItemGraph: k must be an integer in [1, 100000], got 2.5"),
    "k-huge": (lambda: ItemItemGraph(k=10**12), "ItemItemGraph: k must be in [1, 100000], got 1000000000000"),
    "layers-float": (lambda: UserItemGraph(num_layers=2.5),
                     "UserItemGraph: num_layers must be an integer in [0, 100], got 2.5"),
    "layers-bool": (lambda: UserItemGraph(num_layers=True),
                    "UserItemGraph: num_layers must be an integer in [0, 100], got True"),
    "ngcf-layers-float": (lambda: NGCFGraph(num_layers=2.5),
                          "NGCFGraph: num_layers must be an integer in [0, 100], got 2.5"),
    "item-layers-float": (lambda: ItemItemGraph(num_layers=1.0),
                          "ItemItemGraph: num_layers must be an integer in [0, 100], got 1.0"),
    "rebuild-every-float": (lambda: ItemItemGraph(rebuild_every=1.5),
                            "ItemItemGraph: rebuild_every must be an integer >= 1, got 1.5"),
    "recursions-float": (lambda: RCAFusion(num_recursions=2.5),
                         "RCAFusion: num_recursions must be an integer in [0, 100], got 2.5"),
    "joint-dim-float": (lambda: RCAFusion(joint_dim=2.5),
                        "RCAFusion: joint_dim must be an integer in [1, 65536], got 2.5"),
    "joint-dim-huge": (lambda: RCAFusion(joint_dim=10**13),
                       "RCAFusion: joint_dim must be in [1, 65536], got 10000000000000"),
    "heads-float": (lambda: TokenAttentionFusion(num_heads=2.0),
                    "TokenAttentionFusion: num_heads must be an integer in [1, 65536], got 2.0"),
    "negatives-float": (lambda: UltraGCNLoss(num_negatives=2.5),
                        "UltraGCNLoss: num_negatives must be an integer in [1, 100000], got 2.5"),
    "negatives-huge": (lambda: UltraGCNLoss(num_negatives=10**8),
                       "UltraGCNLoss: num_negatives must be in [1, 100000], got 100000000"),
    "neighbors-float": (lambda: UltraGCNLoss(num_neighbors=2.5),
                        "UltraGCNLoss: num_neighbors must be an integer in [1, 100000], got 2.5"),
    "neighbors-huge": (lambda: UltraGCNLoss(num_neighbors=10**12),
                       "UltraGCNLoss: num_neighbors must be in [1, 100000], got 1000000000000"),
    "sum-weights-number": (lambda: SumFusion(weights=1),
                           "SumFusion: weights must be a {modality: weight} mapping with at least one entry, got 1"),
    "sum-weights-nan": (lambda: SumFusion(weights={"image": math.nan}),
                        "SumFusion: weights.image must be >= 0, got nan"),
    "item-weights-list": (lambda: ItemItemGraph(weights=[1]), "ItemItemGraph: weights must be a {modality: weight} "
                                                               "mapping with at least one entry, got [1]"),
    "item-weights-empty": (lambda: ItemItemGraph(weights={}), "ItemItemGraph: weights must be a {modality: weight} "
                                                              "mapping with at least one entry, got {}"),
    "shared-weights-string": (lambda: RCAFusion(shared_weights="abc"),
                              "RCAFusion: shared_weights must be true or false, got 'abc'"),
    "profiles-string": (lambda: ItemItemGraph(user_profiles="false"),
                        "ItemItemGraph: user_profiles must be true or false, got 'false'"),
    "leave-out-int": (lambda: ItemItemGraph(profile_leave_out=1),
                      "ItemItemGraph: profile_leave_out must be true or false, got 1"),
    "infonce-users-none": (lambda: InfoNCELoss(users=None), "InfoNCELoss: users must be true or false, got None"),
    "infonce-no-term": (lambda: InfoNCELoss(users=False, items=False),
                        "InfoNCELoss: users must be true when items is false (else the loss has no term), got False"),
    "infonce-name-none": (lambda: InfoNCELoss(name=None), "InfoNCELoss: name must be a non-empty string, got None"),
    "l2-name-list": (lambda: L2Regularization(name=[1]), "L2Regularization: name must be a non-empty string, got [1]"),
    "content-bpr-name-empty": (lambda: ContentBPRLoss(name=""),
                               "ContentBPRLoss: name must be a non-empty string, got ''"),
    "ultragcn-name-dict": (lambda: UltraGCNLoss(name={"x": 1}),
                           "UltraGCNLoss: name must be a non-empty string, got {'x': 1}"),
}
"""Constructor calls from Python with a wrong type or a size beyond its cap -> the one-line error naming the
argument (torch's TypeError, an AttributeError, a term logged as ``None_users`` or an allocation of terabytes
before)."""


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_a_bad_constructor_argument_is_one_line_naming_it(case: str) -> None:
    make, expected = BAD_ARGUMENTS[case]
    with pytest.raises(InvalidArgument) as info:
        make()
    assert str(info.value) == expected


def test_the_caps_themselves_are_accepted() -> None:
    ItemItemGraph(k=MAX_COUNT, num_layers=MAX_LAYERS)
    RCAFusion(num_recursions=MAX_LAYERS, joint_dim=MAX_EMBEDDING_DIM)
    UltraGCNLoss(num_negatives=MAX_COUNT, num_neighbors=MAX_COUNT)


HUGE_FROM_THE_CLI = {
    "joint-dim": ("--model.fusion={class_path: RCAFusion, init_args: {joint_dim: 10000000000000}}",
                  "model.fusion.init_args.joint_dim must be in [1, 65536], got 10000000000000 (RCAFusion)"),
    "num-negatives": ("--model.aux_losses=[{class_path: UltraGCNLoss, init_args: {num_negatives: 100000000}}]",
                      "model.aux_losses[0].init_args.num_negatives must be in [1, 100000], got 100000000 "
                      "(UltraGCNLoss)"),
}


@pytest.mark.parametrize("case", list(HUGE_FROM_THE_CLI))
def test_a_huge_size_from_the_cli_names_its_key_not_an_allocation(
    case: str, tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    option, expected = HUGE_FROM_THE_CLI[case]
    config = str(Path(__file__).resolve().parents[2] / "configs" / "mf.yaml")
    argv = ["fit", "--config", config, "--data.path", str(tiny_folder), "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}", option]
    assert main(argv) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")] == [
        f"error: {expected}"
    ]
