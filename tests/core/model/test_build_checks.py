"""Configuration mistakes fail when the model is built, named by their config key: what a component requires of
the others (``recplug_check``), duplicate view names, unknown hooks (``check_pending``), the cardinality declared
beside each hook spec; and every component's ``repr`` derived from its constructor's signature."""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pytest
from torch import Tensor

from recplug.core.errors import CardinalityError, ConfigError, PluginError
from recplug.core.model import module as module_module
from recplug.core.model import plugins
from recplug.core.model.components import AuxLoss, RecComponent
from recplug.core.model.hookdocs import render
from recplug.core.model.module import RecModule
from recplug.hookspecs import Cardinality, RecplugSpecs, cardinalities
from recplug.plugins.embedding import ContentView, IdEmbedding
from recplug.plugins.fusion.concat import ConcatFusion
from recplug.plugins.fusion.sum import SumFusion
from recplug.plugins.graphs.item_item import ItemItemGraph
from recplug.plugins.graphs.user_item import UserItemGraph
from recplug.plugins.losses.content_bpr import ContentBPRLoss
from recplug.plugins.losses.infonce import InfoNCELoss

ROOT = Path(__file__).resolve().parents[3]


def build(data, **components) -> RecModule:
    """A bare model: no Trainer, no data seen (``prepare`` never runs), nothing trained."""
    return RecModule(data.num_users, data.num_items, data.feature_dims, embedding_dim=8, **components)


def dual_views() -> list:
    return [UserItemGraph(name="behavior"), ItemItemGraph(name="semantic", source="id")]


# ---------------------------------------------------------------------------- recplug_check
def test_infonce_view_names_a_view_no_encoder_produces(tiny_data) -> None:
    with pytest.raises(ConfigError, match=(
        r"^model.aux_losses\[1\].init_args.view_b must be the name of a view an encoder produces, "
        r"one of \['behavior', 'semantic'\], got 'semantc' \(InfoNCELoss\)$"
    )):
        build(tiny_data, encoders=dual_views(), aux_losses=[ContentBPRLoss(weight=0.1), InfoNCELoss(view_b="semantc")],
              fusion=SumFusion())
    with pytest.raises(ConfigError, match=r"^model.aux_losses\[0\].init_args.view_a must be .*got 'behaviour'"):
        build(tiny_data, encoders=dual_views(), aux_losses=[InfoNCELoss(view_a="behaviour")])
    build(tiny_data, encoders=dual_views(), aux_losses=[InfoNCELoss()])  # the names exist: builds


def test_content_view_needs_a_fusion(tiny_data) -> None:
    with pytest.raises(ConfigError, match=(
        r"^model.encoders\[1\]: ContentView needs item content: set model.fusion \(e.g. ConcatFusion\)$"
    )):
        build(tiny_data, encoders=[IdEmbedding(), ContentView()])
    build(tiny_data, encoders=[IdEmbedding(), ContentView()], fusion=ConcatFusion())


def test_content_bpr_needs_content_and_an_existing_view(tiny_data) -> None:
    with pytest.raises(ConfigError, match=r"^model.aux_losses\[0\]: ContentBPRLoss needs item content: set model.fusion"):
        build(tiny_data, encoders=[UserItemGraph()], aux_losses=[ContentBPRLoss()])
    with pytest.raises(ConfigError, match=r"^model.aux_losses\[0\].init_args.view must be .*\['id'\], got 'behavior'"):
        build(tiny_data, fusion=SumFusion(), aux_losses=[ContentBPRLoss()])


def test_item_item_graph_on_content_needs_a_fusion(tiny_data) -> None:
    with pytest.raises(ConfigError, match=r"^model.encoders\[0\]: ItemItemGraph .*needs item content: set model.fusion"):
        build(tiny_data, encoders=[ItemItemGraph()])
    with pytest.raises(ConfigError, match=r"^model.encoders\[0\]: ItemItemGraph .*learned graph"):
        build(tiny_data, encoders=[ItemItemGraph(source="id", learned_weight=0.5)])
    build(tiny_data, encoders=[ItemItemGraph(source="id")])  # the frozen kNN graph on ID embeddings needs no fusion


def test_item_item_graph_on_data_without_features_says_what_to_change() -> None:
    with pytest.raises(ConfigError, match=r"ItemItemGraph needs item modality features, but the data has none; "
                                          r"remove it from model.encoders or use data with item features$"):
        RecModule(5, 4, {}, embedding_dim=8, encoders=[ItemItemGraph(source="id")])


def test_a_fusion_no_component_reads_is_detected(tiny_data) -> None:
    """The semantic view propagating ID embeddings reads no content: a fusion there is computed for nothing (the
    setup of a fit warns); propagating the content, or a content BPR term, reads it."""
    unread = build(tiny_data, fusion=SumFusion(), encoders=dual_views())
    unread.prepare(tiny_data)
    assert not unread.content_reaches_the_loss(tiny_data)
    for encoders, aux_losses in (([UserItemGraph(name="behavior"), ItemItemGraph(name="semantic", source="content")],
                                  []),
                                 (dual_views(), [ContentBPRLoss(view="behavior")])):
        model = build(tiny_data, fusion=SumFusion(), encoders=encoders, aux_losses=aux_losses)
        model.prepare(tiny_data)
        assert model.content_reaches_the_loss(tiny_data)


def test_fit_warns_about_a_fusion_no_component_reads(tmp_path) -> None:
    from recplug.core.cli.main import main

    args = ["fit", "--config", str(ROOT / "configs" / "crane.yaml"), "--trainer.fast_dev_run=true",
            "--trainer.logger=false", "--checkpoint.save_last=false", "--trainer.enable_progress_bar=false",
            "--trainer.default_root_dir", str(tmp_path)]
    with pytest.warns(UserWarning, match="model.fusion: its fused content reaches no score and no loss term"):
        assert main([*args, "--model.fusion", "RCAFusion"]) == 0


def test_duplicate_view_names(tiny_data) -> None:
    with pytest.raises(ConfigError, match=(
        r"^model.encoders\[2\].init_args.name: two encoders produce a view named 'behavior' "
        r"\(model.encoders\[0\] too\); give each a distinct init_args.name$"
    )):
        build(tiny_data, encoders=[UserItemGraph(), IdEmbedding(), UserItemGraph(num_layers=1)])


def test_a_plain_config_error_of_a_check_is_prefixed_with_the_key(tiny_data) -> None:
    class Picky(AuxLoss):
        def recplug_check(self, views: list[str]) -> None:
            raise ConfigError(f"Picky refuses {views}")

        def recplug_aux_loss(self, batch, output) -> dict[str, Tensor]:
            return {}

    with pytest.raises(ConfigError, match=r"^model.aux_losses\[0\]: Picky refuses \['id'\]$"):
        build(tiny_data, aux_losses=[Picky()])


def test_the_cli_reports_a_check_in_one_line_before_training(tmp_path, capsys) -> None:
    from recplug.core.cli.main import main

    code = main(["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.fast_dev_run=true", "--trainer.logger=false", "--model.aux_losses=[InfoNCELoss]"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: model.aux_losses[0].init_args.view_a must be the name of a view")
    assert not list(tmp_path.rglob("*.ckpt")), "nothing trained"


def test_an_encoder_must_return_the_view_it_declares(tiny_data) -> None:
    class Liar(IdEmbedding):
        def recplug_encode(self, ego_users: Tensor, ego_items: Tensor):
            view = super().recplug_encode(ego_users, ego_items)
            return type(view)("other", view.users, view.items)

    model = build(tiny_data, encoders=[Liar()])
    with pytest.raises(PluginError, match=r"returned views \['other'\] but declare \['id'\]"):
        model()


# ---------------------------------------------------------------------------- unknown hooks
class Typo(IdEmbedding):
    def recplug_set_up(self, data) -> None:  # meant: recplug_setup
        raise AssertionError("never called")


def test_a_typo_d_hook_on_a_component_fails_at_build(tiny_data) -> None:
    with pytest.raises(PluginError, match=(
        r"^model.encoders\[0\] \(Typo\) defines recplug_set_up, which is no recplug hook "
        r"\(did you mean recplug_setup\?\); rename it \(the hooks are recplug_aux_loss, .*recplug_setup\)$"
    )):
        build(tiny_data, encoders=[Typo()])


def test_a_typo_d_hook_in_a_plugin_module_fails_at_build_and_load(tiny_data, monkeypatch) -> None:
    module = types.ModuleType("recplug_typo_demo")
    exec("def recplug_resampel(epoch):\n    pass\n", module.__dict__)
    monkeypatch.setattr(module_module, "active_plugin_modules", lambda: [("typo", module)])
    with pytest.raises(PluginError, match=r"^plugin:typo defines recplug_resampel, .*did you mean recplug_resample\?"):
        build(tiny_data)
    with pytest.warns(UserWarning, match=r"'typo' .*PluginError: recplug_typo_demo defines recplug_resampel"):
        record = plugins._load_one("typo", lambda: module, "recplug-typo-demo", "0.1", strict=False)
    assert record.status == "skipped"


def test_optional_hooks_and_non_hook_attributes_pass(tiny_data) -> None:
    from recplug import hookimpl

    class Extras(IdEmbedding):
        @hookimpl(optionalhook=True)
        def recplug_future_hook(self) -> None:  # a hook of a later recplug: allowed when marked optional
            pass

        def helper(self) -> None:
            pass

    build(tiny_data, encoders=[Extras()])


# ---------------------------------------------------------------------------- cardinality beside the specs
def test_every_spec_declares_its_cardinality() -> None:
    rules = cardinalities()
    specs = [name for name in vars(RecplugSpecs) if name.startswith("recplug_")]
    assert list(rules) == specs and all(isinstance(rule, Cardinality) for rule in rules.values())
    for name, rule in rules.items():
        if (rule.low, rule.high) != (0, None):
            assert rule.key, f"{name} is constrained, so its declaration names the config key to change"
        firstresult = getattr(RecplugSpecs, name).recplug_spec["firstresult"]
        assert firstresult == (rule.high == 1), f"{name}: a firstresult hook takes at most one provider, and only it"


def test_the_module_enforces_the_declared_cardinality(tiny_data, monkeypatch) -> None:
    """check_cardinality has no table of its own: change a declaration and the module follows it."""
    build(tiny_data, aux_losses=[InfoNCELoss(view_a="id", view_b="id")])
    monkeypatch.setattr(RecplugSpecs.recplug_aux_loss, "recplug_cardinality", Cardinality(0, 0, "model.aux_losses"))
    with pytest.raises(CardinalityError, match=(
        r"^hook recplug_aux_loss needs exactly zero providers, found 1: model.aux_losses\[0\] \(InfoNCELoss\); "
    )):
        build(tiny_data, aux_losses=[InfoNCELoss(view_a="id", view_b="id")])


def test_missing_providers_name_the_key(tiny_data, monkeypatch) -> None:
    with pytest.raises(CardinalityError, match=r"^no graph encoder is configured: set model.encoders \(e.g."):
        build(tiny_data, encoders=[])
    monkeypatch.setattr(RecplugSpecs.recplug_encode, "recplug_cardinality", Cardinality(1, None, "model.encoders"))
    with pytest.raises(CardinalityError, match=r"^hook recplug_encode needs one or more providers, found none; "
                                               r"set model.encoders$"):
        build(tiny_data, encoders=[])


def test_the_hook_reference_shows_the_declared_cardinality() -> None:
    text = render()
    for name, rule in cardinalities().items():
        section = text.split(f"## `{name}(")[1].split("\n## ")[0]
        assert f"**Cardinality:** {rule} provider" in section
        assert rule.key is None or f"`{rule.key}`" in section
    assert "**Cardinality:** at most one provider, configured as `model.fusion`; checked when the model is built" in text


# ---------------------------------------------------------------------------- repr from the signature
def builtin_components() -> list[type[RecComponent]]:
    loaded = plugins.load_plugins()
    classes = [getattr(loaded[name].module, cls) for name in plugins.BUILTIN_PLUGINS for cls in loaded[name].components]
    assert len(classes) >= 14
    return classes


@pytest.mark.parametrize("cls", builtin_components(), ids=lambda cls: cls.__name__)
def test_repr_lists_every_constructor_argument(cls: type[RecComponent]) -> None:
    parameters = list(inspect.signature(cls).parameters.values())  # what jsonargparse reads: still the constructor's
    assert all(p.default is not inspect.Parameter.empty for p in parameters), "built-ins construct from defaults"
    component = cls()
    assert component.hparams == {p.name: p.default for p in parameters}
    assert component.extra_repr() == ", ".join(f"{p.name}={p.default!r}" for p in parameters)
    assert repr(component).startswith(f"{cls.__name__}(")


def test_repr_shows_the_given_values_including_those_that_had_drifted() -> None:
    assert ConcatFusion(dropout=0.25).extra_repr() == "trainable_features=False, modalities=None, dropout=0.25"
    weights = {"image": 0.25, "text": 0.75}
    assert SumFusion(modalities=["image", "text"], weights=weights).extra_repr() == (
        "trainable_features=False, modalities=['image', 'text'], weights={'image': 0.25, 'text': 0.75}"
    )
    assert repr(UserItemGraph("ui", 2)) == "UserItemGraph(name='ui', num_layers=2, edge_drop=0.0, backend='torch')"


def test_subclasses_get_their_own_signature_in_repr() -> None:
    class Inherits(IdEmbedding):
        """No __init__ of its own: the parent's arguments."""

    class Fixed(InfoNCELoss):
        def __init__(self, scale: float = 2.0, **kwargs: object) -> None:
            super().__init__(view_a="id", view_b="id", **kwargs)
            self.scale = scale

    assert repr(Inherits(name="x")) == "Inherits(name='x')"
    assert repr(Fixed(name="cl")) == "Fixed(scale=2.0, name='cl')", "the outermost constructor's arguments"
