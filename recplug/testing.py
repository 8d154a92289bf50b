"""Test helpers for plugin authors: a tiny multimodal dataset and a conformance check for components.

Needs pytest (the ``test`` extra). Import the fixtures in a plugin package's ``conftest.py`` (or test file)::

    from recplug.testing import check_component, recplug_temporary_cache, tiny_data, tiny_folder  # noqa: F401

``tiny_data`` is 200 users and 150 items with ``image`` and ``text`` features, ``tiny_folder`` the same data
written as an MMRec folder; ``recplug_temporary_cache`` (automatic once imported) points ``RECPLUG_CACHE`` at a
temporary folder for the session, so kNN graphs and downloads stay out of ``~/.cache``. :func:`check_component` checks
what recplug needs of any fusion, encoder, combiner or aux loss::

    def test_my_fusion_conforms(tiny_data):
        check_component(MyFusion(), tiny_data)
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from recplug.core.model.components import AuxLoss, Combiner, FusionModule, GraphEncoder, RecComponent
from recplug.core.data.dataset import InteractionData
from recplug.core.model.module import RecModule
from recplug.core.model.plugins import hooks_implemented
from recplug.datasets.synthetic import generate

__all__ = ["check_component", "hooks_implemented", "make_tiny_data", "recplug_temporary_cache", "tiny_data", "tiny_folder"]


def make_tiny_data(num_users: int = 200, num_items: int = 150, seed: int = 7) -> InteractionData:
    """A small synthetic multimodal dataset (recplug's generator, 6 topics, 12-d image and 8-d text)."""
    return generate(num_users=num_users, num_items=num_items, num_topics=6, image_dim=12, text_dim=8, seed=seed)


@pytest.fixture(scope="session")
def tiny_data() -> InteractionData:
    """``make_tiny_data()``: 200 users, 150 items, ``image`` (12-d) and ``text`` (8-d) features."""
    return make_tiny_data()


@pytest.fixture
def tiny_folder(tiny_data: InteractionData, tmp_path: Path) -> Path:
    """``tiny_data`` written as an MMRec folder (``recplug fit --data.path <it>``)."""
    from recplug.core.data.formats.mmrec import write_mmrec

    return write_mmrec(tiny_data, tmp_path / "tiny")


@pytest.fixture(autouse=True, scope="session")
def recplug_temporary_cache() -> Iterator[None]:
    """kNN graphs and downloads built by tests never land in the user's cache."""
    previous = os.environ.get("RECPLUG_CACHE")
    with tempfile.TemporaryDirectory(prefix="recplug-test-cache-") as folder:
        os.environ["RECPLUG_CACHE"] = folder
        yield
    if previous is None:
        os.environ.pop("RECPLUG_CACHE", None)
    else:
        os.environ["RECPLUG_CACHE"] = previous


def _wired(component: RecComponent, data: InteractionData, embedding_dim: int, slots: dict[str, Any]) -> RecModule:
    """A model with ``component`` in the slot its base class names and recplug's defaults elsewhere."""
    from recplug.plugins.combine import SumCombiner
    from recplug.plugins.embedding import ContentView, IdEmbedding
    from recplug.plugins.fusion.sum import SumFusion

    wiring: dict[str, Any] = {"encoders": [IdEmbedding()], "combiner": SumCombiner()}
    if isinstance(component, FusionModule):
        wiring.update(fusion=component, encoders=[IdEmbedding(), ContentView()])
    elif isinstance(component, GraphEncoder):
        wiring["encoders"] = [component]
        if data.features:
            wiring["fusion"] = SumFusion()
    elif isinstance(component, Combiner):
        wiring.update(combiner=component, encoders=[IdEmbedding(), IdEmbedding(name="second")])
    elif isinstance(component, AuxLoss):
        wiring["aux_losses"] = [component]
    else:
        raise TypeError(f"{type(component).__name__} is not a FusionModule, GraphEncoder, Combiner or AuxLoss")
    wiring.update(slots)
    return RecModule(data.num_users, data.num_items, data.feature_dims, embedding_dim=embedding_dim, **wiring)


def _training_batch(data: InteractionData, size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    users, items = data.split("train")
    picked = torch.randint(len(users), (min(size, len(users)),), generator=generator)
    negatives = torch.randint(data.num_items, picked.shape, generator=generator)
    return users[picked], items[picked], negatives


def check_component(
    component: RecComponent, data: InteractionData, embedding_dim: int = 16, batch_size: int = 64, **slots: Any
) -> RecModule:
    """Check that ``component`` works as recplug uses it, and return the model built around it.

    The component goes into the slot its base class names (``fusion``, ``encoders``, ``combiner`` or
    ``aux_losses``); the other slots get recplug's defaults (an ``IdEmbedding`` view, ``SumCombiner``; a
    ``ContentView`` for a fusion; ``SumFusion`` for an encoder when the data has features), or what ``slots``
    passes (e.g. ``encoders=[...]`` for an aux loss that reads named views). Checked:

    * ``repr`` names the class and its arguments (read from its constructor's signature);
    * after ``RecModule.prepare`` (``recplug_setup``), a forward gives finite ``[M, d]`` users and ``[N, d]`` items;
    * a training step gives a finite scalar loss whose gradient reaches every trainable parameter of the
      component (a parameter no loss depends on is a bug or belongs in a buffer);
    * a copy of the component made before training, loaded from the trained model's ``state_dict`` and
      prepared again, reproduces the trained model's evaluation-mode embeddings exactly: whatever a
      resumed run needs is either in the checkpoint or rebuilt by ``recplug_setup``;
    * ``reset_parameters()`` re-draws every trained parameter of the component but its raw feature tables
      (``raw_*``: data); the default re-draws each layer's own (``nn.Linear``...), so a component that holds
      its own ``nn.Parameter`` overrides it.
    """
    pristine, pristine_slots = copy.deepcopy(component), copy.deepcopy(slots)
    text = repr(component)
    assert text.startswith(type(component).__name__ + "("), f"repr should name the class: {text}"

    cache = Path(tempfile.mkdtemp(prefix="recplug-check-"))  # kNN graphs the components build
    try:
        model = _wired(component, data, embedding_dim, slots)
        model.prepare(data, cache)
        model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer to log to
        model.eval()
        with torch.no_grad():
            output = model()
        assert output.users.shape[0] == data.num_users and output.items.shape[0] == data.num_items
        assert output.users.shape[1] == output.items.shape[1], "users and items must have the same width"
        assert output.users.isfinite().all() and output.items.isfinite().all(), "non-finite final embeddings"

        model.train()
        generator = torch.Generator().manual_seed(0)
        loss = model.training_step(_training_batch(data, batch_size, generator), 0)
        assert loss.dim() == 0 and loss.isfinite(), f"training loss is {loss}"
        loss.backward()
        silent = [name for name, p in component.named_parameters()
                  if p.requires_grad and (p.grad is None or not p.grad.any())]
        assert not silent, f"no gradient reaches {type(component).__name__} parameters {silent}"
        # the weights now differ from their initial values
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()

        model.eval()
        trained = {key: value.detach().clone() for key, value in model.state_dict().items()}
        restored = _wired(pristine, data, embedding_dim, pristine_slots)
        restored.load_state_dict(trained)
        restored.prepare(data, cache)
        restored.eval()
        with torch.no_grad():
            expected, again = model(), restored()
        torch.testing.assert_close(again.users, expected.users, msg="restored model differs: state lost on resume")
        torch.testing.assert_close(again.items, expected.items, msg="restored model differs: state lost on resume")

        trained_weights = {name: p.detach().clone() for name, p in component.named_parameters()
                           if not name.split(".")[-1].startswith("raw_")}  # raw features are data, kept
        component.reset_parameters()
        kept = [name for name, p in component.named_parameters()
                if name in trained_weights and torch.equal(p, trained_weights[name])]
        assert not kept, f"reset_parameters leaves {type(component).__name__} parameters {kept} as trained"
    finally:  # also when a check fails
        shutil.rmtree(cache, ignore_errors=True)
    return model
