"""Plugin discovery (entry points, broken plugins, duplicates) and cardinality checks."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest
from torch import Tensor

from recplug.core.model import plugins
from recplug.core.model.components import AuxLoss
from recplug.core.errors import CardinalityError, PluginError
from recplug.core.model.module import RecModule
from recplug.core.model.plugins import RecplugPluginManager, load_plugins
from recplug.plugins.combine import ConcatCombiner, SumCombiner
from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.sum import SumFusion


# ---------------------------------------------------------------- fake distributions (nothing installed)
ORIGINAL_DISTRIBUTIONS = importlib.metadata.distributions


class FakeEntryPoint:
    def __init__(self, name: str, value: str) -> None:
        self.name, self.value, self.group = name, value, "recplug"

    def load(self) -> types.ModuleType:
        return importlib.import_module(self.value)


class FakeDist:
    def __init__(self, name: str, version: str, entry_points: list[FakeEntryPoint]) -> None:
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


def install_fake_module(monkeypatch, name: str, source: str) -> None:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)


GOOD_PLUGIN = '''
from torch import nn
from recplug.core.model.components import FusionModule

class GatedToyFusion(FusionModule):
    """A third-party fusion."""
    def build(self, feature_dims, embedding_dim):
        self.proj = nn.Linear(sum(feature_dims.values()), embedding_dim)
    def recplug_fuse(self):
        import torch
        return self.proj(torch.cat(list(self.features().values()), 1))
'''

WRONG_SIGNATURE = '''
def recplug_resample(epoch, colour):  # 'colour' is not an argument of the hook
    pass
'''


@pytest.fixture
def fake_dists(monkeypatch):
    """Three third-party distributions: one good, one that fails to import, one with a bad hook signature."""
    install_fake_module(monkeypatch, "recplug_goodplugin", GOOD_PLUGIN)
    install_fake_module(monkeypatch, "recplug_wrongsig", WRONG_SIGNATURE)
    dists = [
        FakeDist("recplug-good", "1.2.0", [FakeEntryPoint("good", "recplug_goodplugin")]),
        FakeDist("recplug-broken", "0.1.0", [FakeEntryPoint("broken", "recplug_does_not_exist")]),
        FakeDist("recplug-wrongsig", "0.3.0", [FakeEntryPoint("wrongsig", "recplug_wrongsig")]),
    ]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: dists)
    monkeypatch.delenv("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RECPLUG_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("RECPLUG_STRICT_PLUGINS", raising=False)
    yield dists
    load_plugins(reload=True)  # leave the real registry behind for other tests


def test_broken_plugins_warn_and_are_skipped(fake_dists) -> None:
    with pytest.warns(UserWarning) as caught:
        loaded = load_plugins(reload=True)
    messages = [str(w.message) for w in caught]
    assert any("recplug-broken 0.1.0" in m and "ModuleNotFoundError" in m for m in messages)
    assert any("recplug-wrongsig 0.3.0" in m and "colour" in m for m in messages)
    assert loaded["broken"].status == loaded["wrongsig"].status == "skipped"
    good = loaded["good"]
    assert (good.status, good.distribution, good.version) == ("active", "recplug-good", "1.2.0")
    assert good.components == ["GatedToyFusion"] and good.hooks == ["recplug_build", "recplug_fuse", "recplug_setup"]
    # everything else keeps working: built-ins are active
    assert loaded["recplug.plugins.fusion.concat"].status == "active"


def test_strict_mode_turns_a_broken_plugin_into_an_error(fake_dists) -> None:
    with pytest.raises(PluginError, match="recplug-broken"):
        load_plugins(strict=True, reload=True)


def test_duplicate_plugin_names_are_rejected(fake_dists, monkeypatch) -> None:
    dists = fake_dists + [FakeDist("recplug-other", "2.0", [FakeEntryPoint("good", "recplug_goodplugin")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: dists)
    with pytest.warns(UserWarning, match="'good' from recplug-other 2.0 conflicts with recplug-good 1.2.0"):
        loaded = load_plugins(reload=True)
    assert loaded["good"].distribution == "recplug-good"


def test_allow_list_and_autoload_switches(fake_dists, monkeypatch) -> None:
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "good")
    loaded = load_plugins(reload=True)
    assert loaded["good"].status == "active" and loaded["broken"].status == "disabled"
    monkeypatch.setenv("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "good" not in load_plugins(reload=True)


def test_entry_point_components_resolve_by_short_name_in_the_cli(fake_dists, tmp_path, monkeypatch) -> None:
    from recplug.core.cli.main import main

    with pytest.warns(UserWarning):
        load_plugins(reload=True)
    # discovery is done (and cached); Lightning's own entry-point lookups must see the real distributions
    monkeypatch.setattr(importlib.metadata, "distributions", ORIGINAL_DISTRIBUTIONS)
    code = main(["fit", "--config", "configs/mf.yaml", "--model.fusion", "GatedToyFusion",
                 "--trainer.fast_dev_run=true", "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar=false", "--trainer.logger=false"])
    assert code == 0


# ---------------------------------------------------------------- the manager itself
def test_only_prefixed_attributes_are_read() -> None:
    class Touchy:
        @property
        def weights(self):  # an nn.Module property that must not be evaluated
            raise AssertionError("read a non-hook attribute")

        def recplug_resample(self, epoch):  # undecorated: still a hook implementation
            return epoch

    pm = RecplugPluginManager()
    pm.register(Touchy(), name="touchy")
    assert pm.providers("recplug_resample") == ["touchy"]


class ExtraFuse(AuxLoss):
    """An aux loss that (wrongly) also fuses."""

    def recplug_fuse(self) -> Tensor:
        raise AssertionError

    def recplug_aux_loss(self, batch, output):
        return {}


class ExtraCombine(AuxLoss):
    def recplug_combine(self, views):
        raise AssertionError

    def recplug_aux_loss(self, batch, output):
        return {}


def test_two_fusion_providers_name_every_provider_and_the_key(tiny_data) -> None:
    with pytest.raises(CardinalityError) as info:
        RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims,
                  fusion=ConcatFusion(), aux_losses=[ExtraFuse()])
    message = str(info.value)
    assert "recplug_fuse" in message and "model.fusion (ConcatFusion)" in message
    assert "model.aux_losses[0] (ExtraFuse)" in message and "set it as model.fusion" in message


def test_combine_needs_exactly_one_provider(tiny_data) -> None:
    with pytest.raises(CardinalityError, match=r"exactly one.*model.combiner \(ConcatCombiner\).*ExtraCombine"):
        RecModule(tiny_data.num_users, tiny_data.num_items, combiner=ConcatCombiner(), aux_losses=[ExtraCombine()])


def test_no_encoder_is_an_error(tiny_data) -> None:
    with pytest.raises(CardinalityError, match="model.encoders"):
        RecModule(tiny_data.num_users, tiny_data.num_items, encoders=[])


def test_defaults_are_found_by_name_among_the_loaded_plugins(tiny_data, monkeypatch) -> None:
    from recplug.core.model import module
    from recplug.plugins.embedding import IdEmbedding

    model = RecModule(tiny_data.num_users, tiny_data.num_items)
    assert type(model.combiner) is SumCombiner and [type(e) for e in model.encoders] == [IdEmbedding]
    monkeypatch.setattr(module, "DEFAULT_COMBINER", "NoSuchCombiner")
    with pytest.raises(PluginError, match=r"^model.combiner: .*'NoSuchCombiner'.*found: none\); set model.combiner$"):
        RecModule(tiny_data.num_users, tiny_data.num_items)
    monkeypatch.setattr(module, "DEFAULT_COMBINER", "SumFusion")  # a plugin's class, but no Combiner
    with pytest.raises(PluginError, match="model.combiner"):
        RecModule(tiny_data.num_users, tiny_data.num_items)


def test_builtins_are_plugins_like_any_other() -> None:
    loaded = load_plugins()
    for module_name in plugins.BUILTIN_PLUGINS:
        record = loaded[module_name]
        assert record.distribution == "recplug" and record.status == "active"
    assert "SumFusion" in loaded["recplug.plugins.fusion.sum"].components
    assert "SumCombiner" in loaded["recplug.plugins.combine"].components


def test_components_have_docstrings() -> None:
    for record in load_plugins().values():
        if record.module is None:
            continue
        for name in record.components:
            assert getattr(record.module, name).__doc__, f"{record.name}.{name} has no docstring"


def test_plugin_components_are_trained_and_checkpointed(tiny_data) -> None:
    module = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims,
                       fusion=SumFusion(trainable_features=True), combiner=SumCombiner())
    state = module.state_dict()
    assert "fusion.proj.image.weight" in state and "fusion.raw_image" in state
    frozen = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, fusion=SumFusion())
    assert "fusion.raw_image" not in frozen.state_dict(), "frozen features come from the data, not checkpoints"
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert {"fusion.raw_image", "fusion.proj.text.weight"} <= names


def test_fusion_rejects_unknown_modalities(tiny_data) -> None:
    from recplug.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"modalities names \['audio'\]"):
        RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims,
                  fusion=ConcatFusion(modalities=["audio"]))


def test_trained_features_survive_a_checkpoint_load_and_prepare(tiny_data) -> None:
    import torch

    trained = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims,
                        fusion=SumFusion(trainable_features=True))
    trained.prepare(tiny_data)
    with torch.no_grad():
        trained.fusion.raw_image.add_(1.0)
    restored = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims,
                         fusion=SumFusion(trainable_features=True))
    restored.load_state_dict(trained.state_dict())
    restored.prepare(tiny_data)  # what load_from_checkpoint users are told to do
    assert torch.equal(restored.fusion.raw_image, trained.fusion.raw_image)
