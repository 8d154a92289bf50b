"""Every hookspec is documented and tested: one ``test_hook_<name>`` per hook (datasette's meta-tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from recplug.core.errors import ConfigError
from recplug.core.model.components import AuxLoss, Combiner, FusionModule, GraphEncoder
from recplug.core.model.hookdocs import REQUIRED_SECTIONS, hookspecs, render, signature
from recplug.core.model.module import RecModule
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput
from recplug.plugins.embedding import IdEmbedding

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(hookspecs()))
def test_hookspec_is_documented(name: str) -> None:
    doc = hookspecs()[name].__doc__ or ""
    for section in REQUIRED_SECTIONS:
        assert section in doc, f"{name}'s docstring lacks {section}"
    assert f"`{signature(name)}`" in (ROOT / "docs" / "hooks.md").read_text()


def test_hook_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "hooks.md").read_text() == render(), "run: python -m recplug.core.model.hookdocs > docs/hooks.md"


@pytest.mark.parametrize("name", list(hookspecs()))
def test_every_hook_has_a_test(name: str) -> None:
    assert f"def test_hook_{name}(" in Path(__file__).read_text(), f"write test_hook_{name} in this module"


def make_module(tiny_data, **kwargs) -> RecModule:
    module = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, embedding_dim=8, **kwargs)
    module.prepare(tiny_data)
    return module


class Recorder(GraphEncoder):
    """Records the hook calls it receives."""

    def __init__(self) -> None:
        super().__init__("recorded")
        self.calls: dict[str, dict] = {}

    def recplug_build(self, num_users: int, num_items: int, feature_dims: dict, embedding_dim: int) -> None:
        self.calls["build"] = dict(num_users=num_users, num_items=num_items, feature_dims=feature_dims, d=embedding_dim)
        self.scale = nn.Parameter(torch.ones(1))

    def recplug_setup(self, data, cache_dir) -> None:
        self.calls["setup"] = dict(train=data.num_interactions("train"), cache_dir=cache_dir)

    def recplug_resample(self, epoch: int, generator: torch.Generator) -> None:
        self.calls.setdefault("resample", []).append((epoch, torch.randint(1000, (1,), generator=generator).item()))

    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None) -> GraphView:
        self.calls["encode"] = dict(content=content)
        return GraphView(self.view_name, ego_users * self.scale, ego_items)


def test_hook_recplug_build(tiny_data) -> None:
    recorder = Recorder()
    module = make_module(tiny_data, encoders=[recorder])
    assert recorder.calls["build"] == dict(
        num_users=tiny_data.num_users, num_items=tiny_data.num_items, feature_dims=tiny_data.feature_dims, d=8
    )
    # parameters created in the hook belong to the module: trained and checkpointed
    assert "encoders.0.scale" in module.state_dict()


class NeedsView(AuxLoss):
    """Reads a named view (test double): records what recplug_check received."""

    def __init__(self, view: str = "recorded") -> None:
        super().__init__()
        self.view = view

    def recplug_check(self, views: list[str], has_content: bool) -> None:
        self.checked = (views, has_content)
        self.require_view("view", views)

    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        return {}


def test_hook_recplug_check(tiny_data) -> None:
    loss = NeedsView()
    make_module(tiny_data, encoders=[Recorder(), IdEmbedding()], aux_losses=[loss])
    assert loss.checked == (["id", "recorded"], False), "sorted view names, no fusion"
    make_module(tiny_data, encoders=[Recorder()], fusion=MeanFusion(), aux_losses=[loss])
    assert loss.checked == (["recorded"], True)
    recorder = Recorder()
    with pytest.raises(ConfigError, match=r"^model.aux_losses\[0\].init_args.view must be .*\['recorded'\], got 'id'"):
        make_module(tiny_data, encoders=[recorder], aux_losses=[NeedsView("id")])
    assert "build" not in recorder.calls, "checked before anything is built"


def test_hook_recplug_setup(tiny_data, tmp_path) -> None:
    recorder = Recorder()
    module = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, encoders=[recorder])
    module.prepare(tiny_data, cache_dir=tmp_path)
    assert recorder.calls["setup"] == dict(train=tiny_data.num_interactions("train"), cache_dir=tmp_path)


def test_hook_recplug_resample(tiny_data) -> None:
    import pytorch_lightning as pl

    from recplug.core.data.datamodule import RecDataModule

    recorder = Recorder()
    dm = RecDataModule(batch_size=4096)
    module = RecModule(dm.num_users, dm.num_items, dm.feature_dims, encoders=[recorder])
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    epochs = [epoch for epoch, _ in recorder.calls["resample"]]
    draws = [draw for _, draw in recorder.calls["resample"]]
    assert epochs == [0, 1]
    assert draws[0] != draws[1], "each epoch gets its own generator state"


class MeanFusion(FusionModule):
    """Projects every modality to d and averages (test double)."""

    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embedding_dim) for m, dim in feature_dims.items()})

    def recplug_fuse(self) -> Tensor:
        return torch.stack([self.proj[m](x) for m, x in self.features().items()]).mean(0)


def test_hook_recplug_fuse(tiny_data) -> None:
    recorder = Recorder()
    module = make_module(tiny_data, encoders=[recorder], fusion=MeanFusion())
    module()
    content = recorder.calls["encode"]["content"]
    assert content.shape == (tiny_data.num_items, 8)
    # the fusion sees the data's real features (copied in at setup)
    assert torch.equal(module.fusion.features()["image"], tiny_data.features["image"])


class RefiningFusion(MeanFusion):
    """MeanFusion that also gives its projections (test double); counts the recplug_refine calls."""

    calls = 0

    def recplug_refine(self) -> dict[str, Tensor]:
        self.calls += 1
        return {m: self.proj[m](x) for m, x in self.features().items()}


class Refreshing(GraphEncoder):
    """Reads the refined features only when ``refresh`` is set (test double of a graph rebuilt from them)."""

    def __init__(self) -> None:
        super().__init__("refreshing")
        self.refresh, self.seen = False, {}

    def recplug_check(self, refines: bool) -> None:
        self.refines = refines

    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, refined) -> GraphView:
        self.seen = {"callable": refined is not None}
        if self.refresh:
            self.seen["refined"] = refined()
        return GraphView(self.view_name, ego_users, ego_items)


def test_hook_recplug_refine(tiny_data) -> None:
    encoder, fusion = Refreshing(), RefiningFusion()
    module = make_module(tiny_data, encoders=[encoder], fusion=fusion)
    assert encoder.refines
    module()
    assert encoder.seen == {"callable": True} and fusion.calls == 0, "computed only when an encoder asks"
    encoder.refresh = True
    module()
    refined = encoder.seen["refined"]
    assert fusion.calls == 1 and sorted(refined) == sorted(tiny_data.feature_dims)
    assert all(x.shape == (tiny_data.num_items, 8) for x in refined.values())
    plain = Refreshing()
    make_module(tiny_data, encoders=[plain], fusion=MeanFusion())()  # a fusion without recplug_refine
    assert not plain.refines and plain.seen == {"callable": False}


def test_hook_recplug_encode(tiny_data) -> None:
    module = make_module(tiny_data, encoders=[IdEmbedding(), Recorder()])
    out = module()
    assert set(out.views) == {"id", "recorded"}
    assert out.views["id"].users.shape == (tiny_data.num_users, 8)
    assert out.content is None, "no fusion configured: encoders get content=None"


class Halves(Combiner):
    """Weighted combination (test double)."""

    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        self.seen = [v.name for v in views]
        return 0.5 * sum(v.users for v in views), 0.5 * sum(v.items for v in views)


def test_hook_recplug_combine(tiny_data) -> None:
    combiner = Halves()
    module = make_module(tiny_data, encoders=[Recorder(), IdEmbedding()], combiner=combiner)
    out = module()
    assert combiner.seen == ["id", "recorded"], "views arrive sorted by name"
    assert torch.allclose(out.users, 0.5 * (out.views["id"].users + out.views["recorded"].users))


class NormPenalty(AuxLoss):
    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        return {"norm": self.weight * output.users[batch.users].pow(2).sum(1).mean()}


def test_hook_recplug_aux_loss(tiny_data) -> None:
    module = make_module(tiny_data, aux_losses=[NormPenalty(weight=0.5)])
    logged: dict[str, Tensor] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)  # type: ignore[method-assign]
    batch = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    loss = module.training_step(batch, 0)
    users, items = module.user_embedding.weight, module.item_embedding.weight
    u = users[batch[0]]
    bpr = torch.nn.functional.softplus((u * items[batch[2]]).sum(1) - (u * items[batch[1]]).sum(1)).mean()
    norm = 0.5 * u.pow(2).sum(1).mean()
    assert torch.allclose(logged["train/bpr"], bpr)
    assert torch.allclose(logged["train/norm"], norm)
    assert torch.allclose(loss, bpr + norm)


def test_bpr_weight_scales_or_switches_off_the_skeleton_loss(tiny_data) -> None:
    batch = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    losses = {}
    for weight in (1.0, 0.25, 0.0):
        torch.manual_seed(0)
        module = make_module(tiny_data, aux_losses=[NormPenalty(weight=0.5)], bpr_weight=weight)
        logged: dict[str, Tensor] = {}
        module.log = lambda name, value, **kw: logged.__setitem__(name, value)  # type: ignore[method-assign]
        losses[weight] = module.training_step(batch, 0)
        assert ("train/bpr" in logged) == (weight > 0)
    u = module.user_embedding.weight[batch[0]]
    torch.testing.assert_close(losses[0.0], 0.5 * u.pow(2).sum(1).mean())  # the aux term alone
    torch.testing.assert_close(losses[0.25] - losses[0.0], 0.25 * (losses[1.0] - losses[0.0]))
    with pytest.raises(ConfigError, match="nothing to train"):
        make_module(tiny_data, bpr_weight=0.0)
    with pytest.raises(ConfigError, match="model.bpr_weight must be >= 0"):
        make_module(tiny_data, bpr_weight=-1.0)
