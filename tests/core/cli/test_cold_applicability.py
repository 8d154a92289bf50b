"""Every bundle in configs/ either scores cold items from something it learned (item content, or an item-item
graph over content carrying warm items' embeddings) or is reported as not applicable (ID-only models), as
``RecModule.scores_cold_items`` decides; a new bundle must be added to the table below."""

from __future__ import annotations

import pytest
import torch
from test_configs import BUNDLES, QUIET, data_args

from recplug.core.cli.main import run_cli
from recplug.core.model.module import RecModule

SCORES_COLD_ITEMS = {
    "crane": True,      # kNN graph over content propagating warm items' ID embeddings, and user profiles of it
    "crane_rca": True,  # semantic view: the fused content over the kNN graph, and user profiles of it
    "freedom": True,    # item-item kNN graph over content propagating warm items' ID embeddings
    "lattice": True,    # the same, with a learned graph of the fused content
    "mgcn": True,       # semantic view of the fused content
    "vbpr": True,       # content view E f_i
    "mf": False,        # ID embeddings only
    "lightgcn": False,  # a cold item has no edge: its own ID embedding, scaled
    "lightgcn_gowalla": False,
    "ngcf": False,      # the same, through NGCF's transforms of its own embedding
    "ngcf_gowalla": False,
    "ultragcn": False,
    "ultragcn_gowalla": False,
}


def test_every_bundle_is_classified() -> None:
    assert sorted(p.stem for p in BUNDLES) == sorted(SCORES_COLD_ITEMS)


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_bundle_scores_cold_items_only_from_what_it_learned(path, tmp_path, tiny_data, tiny_folder) -> None:
    source = data_args(path, tmp_path, tiny_data) or ["--data.path", str(tiny_folder)]
    cli = run_cli(["--config", str(path), *source, "--data.cold_items", "0.2", *QUIET], run=False)
    model, data = cli.model, cli.datamodule.data
    if SCORES_COLD_ITEMS[path.stem]:
        model.prepare(data)
    else:
        with pytest.warns(UserWarning, match="cannot score them"):
            model.prepare(data)
    assert model.scores_cold_items(data.cold_items) is SCORES_COLD_ITEMS[path.stem]
    assert model._cold_scored is SCORES_COLD_ITEMS[path.stem]


def test_own_id_embeddings_do_not_count_but_other_items_do(tiny_data) -> None:
    """The cold items' own rows are excluded, so an ID model is not applicable whichever items are cold; a model
    whose item i is item (i+1)'s ID embedding (a stand-in for a graph) is, as long as a warm item feeds it."""
    model = RecModule(tiny_data.num_users, tiny_data.num_items)
    model.prepare(tiny_data)
    assert model.scores_cold_items(torch.tensor([0, 5])) is False
    rolled = torch.roll(torch.arange(tiny_data.num_items), -1)
    original = model.forward

    def forward():
        output = original()
        output.items = output.items[rolled]
        return output

    model.forward = forward  # type: ignore[method-assign]
    assert model.scores_cold_items(torch.tensor([0, 5])) is True  # items 0 and 5 read items 1 and 6, warm
