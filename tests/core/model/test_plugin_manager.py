"""Plugin discovery (entry points, broken plugins, duplicates) and cardinality checks."""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import io
import re
import sys
import types
import warnings

import pytest
import torch
from torch import Tensor

from recplug.core.model import plugins
from recplug.core.model.components import AuxLoss
from recplug.core.errors import CardinalityError, PluginError
from recplug.core.model.module import RecModule
from recplug.core.model.plugins import RecplugPluginManager, load_plugins
from recplug.core.model.types import BPRBatch, GraphView
from recplug.plugins.combine import ConcatCombiner, SumCombiner
from recplug.plugins.embedding import IdEmbedding
from recplug.plugins.losses.content_bpr import ContentBPRLoss
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


def test_a_distribution_found_twice_on_the_path_is_one_plugin(fake_dists, monkeypatch) -> None:
    """An editable install run from its source folder is found twice (its ``*.egg-info`` on the current folder):
    the same entry point is not a name conflict, not even under RECPLUG_STRICT_PLUGINS."""
    good = fake_dists[0]
    twice = fake_dists + [FakeDist("Recplug_Good", good.version, good.entry_points)]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: twice)
    monkeypatch.setenv("RECPLUG_LOAD_PLUGINS", "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_plugins(strict=True, reload=True)
    assert (loaded["good"].status, loaded["good"].distribution) == ("active", "recplug-good")


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


# ---------------------------------------------------------------- plugins that break the rules (a fuzzing round)
CLASS_ENTRY_POINT = '''
from recplug.core.model.components import AuxLoss

class ClassLoss(AuxLoss):
    """An aux loss whose entry point names this class, not its module."""
    def recplug_aux_loss(self, batch, output):
        return {}
'''

CLASHING_PLUGIN = '''
from recplug.plugins.fusion.concat import ConcatFusion as _Builtin

class ConcatFusion(_Builtin):
    """A third-party fusion named like a built-in one."""
'''

MISNAMED_ARGUMENT = '''
from recplug.core.model.components import AuxLoss

class OutputsLoss(AuxLoss):
    """Its hook names an argument the spec lacks."""
    def recplug_aux_loss(self, batch, outputs):
        return {}
'''


def installed(monkeypatch, *dists: FakeDist) -> None:
    """Make ``dists`` the only installed distributions, plugin autoload on and no allow-list."""
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: list(dists))
    for name in ("RECPLUG_DISABLE_PLUGIN_AUTOLOAD", "RECPLUG_LOAD_PLUGINS"):
        monkeypatch.delenv(name, raising=False)


class FakeClassEntryPoint(FakeEntryPoint):
    def load(self) -> type:
        module, _, name = self.value.partition(":")
        return getattr(importlib.import_module(module), name)


def test_an_entry_point_naming_a_class_is_skipped(monkeypatch, tiny_data) -> None:
    """Registered as a module, its methods ran unbound in every model (a TypeError in every fit, MF's too)."""
    install_fake_module(monkeypatch, "recplug_classplugin", CLASS_ENTRY_POINT)
    installed(monkeypatch, FakeDist("recplug-cls", "0.1", [FakeClassEntryPoint("cls", "recplug_classplugin:ClassLoss")]))
    try:
        with pytest.warns(UserWarning, match=r"'cls' from distribution recplug-cls 0.1 failed to load: PluginError: "
                                             r"its entry point names the class 'ClassLoss', not a module"):
            assert load_plugins(reload=True)["cls"].status == "skipped"
        RecModule(tiny_data.num_users, tiny_data.num_items)  # other models are not touched
    finally:
        load_plugins(reload=True)


def test_a_class_of_a_skipped_plugin_is_no_choice_and_one_line_when_named(monkeypatch, tiny_data) -> None:
    from recplug.core.cli.lightning import component_choices

    install_fake_module(monkeypatch, "recplug_misnamed", MISNAMED_ARGUMENT)
    installed(monkeypatch, FakeDist("recplug-misnamed", "0.1", [FakeEntryPoint("misnamed", "recplug_misnamed")]))
    try:
        with pytest.warns(UserWarning, match="'misnamed' .* failed to load"):
            load_plugins(reload=True)
        assert "OutputsLoss" not in component_choices("AuxLoss") and "L2Regularization" in component_choices("AuxLoss")
        loss = sys.modules["recplug_misnamed"].OutputsLoss()
        with pytest.raises(PluginError, match=r"^model.aux_losses\[0\] \(OutputsLoss\): Plugin 'model.aux_losses\[0\]'"
                                              r".*outputs"):
            RecModule(tiny_data.num_users, tiny_data.num_items, aux_losses=[loss])
    finally:
        load_plugins(reload=True)


def test_a_plugin_class_named_like_a_builtin_is_named_as_ambiguous(monkeypatch, tmp_path) -> None:
    from recplug.core.cli.main import main

    clash = types.ModuleType("recplug_clash")
    exec(compile(CLASHING_PLUGIN, "recplug_clash", "exec"), clash.__dict__)
    sys.modules["recplug_clash"] = clash
    installed(monkeypatch, FakeDist("recplug-clash", "0.2", [FakeEntryPoint("clash", "recplug_clash")]))
    try:
        with pytest.warns(UserWarning, match=r"'clash' from recplug-clash 0.2 defines ConcatFusion, as "
                                             r"recplug.plugins.fusion.concat \(recplug .*\) does: a config naming "
                                             r"ConcatFusion must now give its full class_path"):
            load_plugins(reload=True)
        monkeypatch.setattr(importlib.metadata, "distributions", ORIGINAL_DISTRIBUTIONS)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["fit", "--config", "configs/vbpr.yaml", "--trainer.fast_dev_run=true",
                         "--trainer.default_root_dir", str(tmp_path)])
        assert code == 2 and err.getvalue().splitlines()[-1] == (
            "error: model.fusion: ConcatFusion is defined by more than one loaded plugin "
            "(recplug.plugins.fusion.ConcatFusion, recplug_clash.ConcatFusion); give its full class_path")
    finally:  # the class must be gone, not only unimported: jsonargparse finds classes by __subclasses__()
        monkeypatch.setattr(importlib.metadata, "distributions", ORIGINAL_DISTRIBUTIONS)
        del sys.modules["recplug_clash"], clash
        load_plugins(reload=True)
        gc.collect()
        assert "recplug_clash" not in {cls.__module__ for cls in ConcatFusion.__subclasses__()}


def test_an_entry_point_naming_a_loaded_module_is_skipped_and_fit_works(monkeypatch, tiny_data) -> None:
    """Fuzz round 5, M1: ``dup = recplug.plugins.embedding`` (or two entry points naming one module) was listed as
    active, then every model failed with pluggy's 2,000-character 'Plugin already registered under a different
    name'."""
    from recplug.core.cli.lightning import component_choices

    install_fake_module(monkeypatch, "recplug_goodplugin", GOOD_PLUGIN)
    installed(monkeypatch,
              FakeDist("p1", "0.1", [FakeEntryPoint("dup", "recplug.plugins.embedding")]),
              FakeDist("p11", "0.2", [FakeEntryPoint("dup2", "recplug_goodplugin"),
                                      FakeEntryPoint("dup3", "recplug_goodplugin")]))
    try:
        with pytest.warns(UserWarning) as caught:
            loaded = load_plugins(reload=True)
        assert [str(w.message) for w in caught] == [
            "recplug: plugin 'dup' from p1 0.1 names module recplug.plugins.embedding, which plugin "
            f"'recplug.plugins.embedding' from recplug {loaded['recplug.plugins.embedding'].version} already loaded; "
            "remove one entry point (the second one is skipped)",
            "recplug: plugin 'dup3' from p11 0.2 names module recplug_goodplugin, which plugin 'dup2' from p11 0.2 "
            "already loaded; remove one entry point (the second one is skipped)",
        ]
        assert loaded["dup"].status == loaded["dup3"].status == "skipped" and loaded["dup2"].status == "active"
        assert loaded["dup3"].error == "module recplug_goodplugin is already loaded as plugin 'dup2'"
        assert {"IdEmbedding", "GatedToyFusion"} <= {*component_choices("GraphEncoder"), *component_choices(
            "FusionModule")}  # a module skipped under a second name is still usable under its first
        fusion = sys.modules["recplug_goodplugin"].GatedToyFusion()
        RecModule(tiny_data.num_users, tiny_data.num_items, feature_dims=tiny_data.feature_dims, fusion=fusion)
        with pytest.raises(PluginError, match=r"^recplug: plugin 'dup' from p1 0.1 names module "
                                              r"recplug.plugins.embedding, which plugin"):
            load_plugins(strict=True, reload=True)
    finally:
        load_plugins(reload=True)


@pytest.mark.parametrize("value", ["", " ", "a b", ":attr"])
def test_an_entry_point_whose_value_names_no_module_is_skipped_with_that_reason(value, monkeypatch) -> None:
    """Fuzz round 5, M1: ``empty = `` was skipped as "AttributeError: 'NoneType' object has no attribute
    'group'"."""

    class RealLoad(FakeEntryPoint):  # importlib.metadata's own load, which fails on such a value
        load = importlib.metadata.EntryPoint.load

    installed(monkeypatch, FakeDist("p1", "0.1", [RealLoad("empty", value)]))
    try:
        with pytest.warns(UserWarning, match=rf"'empty' from distribution p1 0.1 failed to load: PluginError: its "
                                             rf"entry point value {re.escape(repr(value))} names no module \(expected "
                                             r"package.module\)"):
            assert load_plugins(reload=True)["empty"].status == "skipped"
    finally:
        load_plugins(reload=True)


def test_a_shadowed_class_path_is_offered_once() -> None:
    """Fuzz round 5, M1: the warning offered 'recplug.plugins.embedding.IdEmbedding or
    recplug.plugins.embedding.IdEmbedding' (two module objects of one name)."""
    first = plugins.LoadedPlugin("a", "twin", "d1", "1", "active", components=["Twin"])
    second = plugins.LoadedPlugin("b", "twin", "d2", "2", "active", components=["Twin"])
    with pytest.warns(UserWarning, match=r"must now give its full class_path \(twin\.Twin\); rename"):
        plugins._warn_of_taken_names(second, {"a": first, "b": second}, strict=False)


def test_a_module_level_single_provider_hook_names_the_plugin_to_leave_out(monkeypatch, tiny_data) -> None:
    module = types.ModuleType("recplug_modcombine")
    exec("def recplug_combine(views):\n    return views[0].users, views[0].items\n", module.__dict__)
    monkeypatch.setattr("recplug.core.model.module.active_plugin_modules",
                        lambda: [*plugins.active_plugin_modules(), ("modcombine", module)])
    with pytest.raises(CardinalityError, match=r"found 2: plugin:modcombine, model.combiner \(SumCombiner\); plugin "
                                               r"modcombine implements it at module level, for every model: uninstall"):
        RecModule(tiny_data.num_users, tiny_data.num_items)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"fusion": "ConcatFusion"}, r"model.fusion must be a FusionModule instance, got str 'ConcatFusion'"),
    ({"encoders": "IdEmbedding"}, r"model.encoders must be a list of GraphEncoder instances, got str 'IdEmbedding'"),
    ({"aux_losses": [1]}, r"model.aux_losses\[0\] must be a AuxLoss instance, got int 1"),
    ({"num_users": 0}, r"model.num_users must be >= 1, got 0"),
    ({"num_items": 2.5}, r"model.num_items must be an integer >= 1, got 2.5"),
    ({"embedding_dim": 2.0}, r"model.embedding_dim must be an integer in \[1, 65536\], got 2.0"),
], ids=["fusion-by-name", "encoders-by-name", "aux-loss-not-a-component", "no-users", "items-float", "dim-float"])
def test_recmodule_refuses_what_is_not_a_component_or_a_count(tiny_data, arguments, message) -> None:
    """From Python, ``fusion="ConcatFusion"`` was dropped without a word; counts reached torch."""
    from recplug.core.errors import ConfigError

    given = {"num_users": tiny_data.num_users, "num_items": tiny_data.num_items, "feature_dims": tiny_data.feature_dims}
    with pytest.raises(ConfigError, match=f"^{message}$"):
        RecModule(**{**given, **arguments})


def test_one_component_instance_in_two_slots_is_refused(tiny_data) -> None:
    from recplug.core.errors import ConfigError
    from recplug.plugins.losses.l2 import L2Regularization

    loss = L2Regularization()
    with pytest.raises(ConfigError, match=r"^model.aux_losses\[1\] is the same L2Regularization instance as "
                                          r"model.aux_losses\[0\]; give each its own$"):
        RecModule(tiny_data.num_users, tiny_data.num_items, aux_losses=[loss, loss])


# ---------------------------------------------------------------- what a plugin's hook returns
class ReturningLoss(AuxLoss):
    """An aux loss returning whatever it is given."""

    def __init__(self, result) -> None:
        super().__init__(1.0)
        self.result = result

    def recplug_aux_loss(self, batch, output):
        return self.result


class ReturningEncoder(IdEmbedding):
    """An encoder returning ``change(view)``."""

    def __init__(self, change) -> None:
        super().__init__()
        self.change = change

    def recplug_encode(self, ego_users, ego_items):
        return self.change(GraphView(self.view_name, ego_users, ego_items))


class SwappingCombiner(SumCombiner):
    def recplug_combine(self, views):
        users, items = super().recplug_combine(views)
        return items, users


class ShortFusion(SumFusion):
    def recplug_fuse(self):
        return super().recplug_fuse()[:7]


def _step(model: RecModule, data) -> None:
    """One training forward and its loss terms on the first 8 training pairs."""
    model.prepare(data)
    users, items = data.split("train")
    batch = BPRBatch(users[:8], items[:8], items[8:16])
    model.loss_terms(batch, model(batch))


@pytest.mark.parametrize(("components", "message"), [
    ({"aux_losses": [ReturningLoss([1])]}, r"model.aux_losses\[0\] \(ReturningLoss\): recplug_aux_loss returned a list; "
                                           r"expected a dict of names to scalar tensors \(\{\} for no term\)"),
    ({"aux_losses": [ReturningLoss(None)]}, r"model.aux_losses\[0\] \(ReturningLoss\): recplug_aux_loss returned None"),
    ({"aux_losses": [ReturningLoss({"t": 0.5})]}, r"returned the term 't': a float; expected a dict of names"),
    ({"aux_losses": [ReturningLoss({1: torch.tensor(1.0)})]}, r"returned the term 1: a tensor of shape \[\]"),
    ({"encoders": [ReturningEncoder(lambda view: (view.users, view.items))]},
     r"model.encoders\[0\] \(ReturningEncoder\): recplug_encode returned a tuple; expected a GraphView"),
    ({"encoders": [ReturningEncoder(lambda view: GraphView(view.name, view.users[:5], view.items))]},
     r"model.encoders\[0\] \(ReturningEncoder\): recplug_encode's view 'id' has users a tensor of shape \[5, 64\] and "
     r"items a tensor of shape \[\d+, 64\]; expected \[\d+, d\] and \[\d+, d\] tensors"),
    ({"encoders": [IdEmbedding(name="plain"), ReturningEncoder(lambda view: (view.users, view.items))]},
     r"model.encoders\[1\] \(ReturningEncoder\): recplug_encode returned a tuple"),  # the second one is named
    ({"combiner": SwappingCombiner()}, r"model.combiner \(SwappingCombiner\): recplug_combine returned \(a tensor of "
                                       r"shape \[\d+, 64\], a tensor of shape \[\d+, 64\]\); expected \(users, items\)"),
    ({"fusion": ShortFusion(), "aux_losses": [ContentBPRLoss(view="id")]},
     r"model.fusion \(ShortFusion\): recplug_fuse returned a tensor of shape \[7, 64\]; expected a \[\d+, d\] tensor"),
], ids=["terms-a-list", "terms-none", "term-a-float", "term-not-named", "view-a-tuple", "view-rows", "second-view",
        "swapped", "content-rows"])
def test_a_hook_returning_the_wrong_thing_is_named_with_its_provider(tiny_data, components, message) -> None:
    """These ended in an IndexError or AttributeError deep in the loss, or (None) were dropped without a word."""
    model = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, **components)
    with pytest.raises(PluginError, match=message):
        _step(model, tiny_data)
