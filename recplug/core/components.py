"""Base classes of the components a bundle YAML selects.

They are ``nn.Module``s (so their parameters are trained and checkpointed) and ABCs (so jsonargparse never
offers a base class as a choice). Each declares the hook that defines its role; subclasses implement it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
import torch
from torch import Tensor, nn

from recplug.core.errors import ConfigError
from recplug.core.dataset import InteractionData
from recplug.core.types import BPRBatch, GraphView, ModelOutput


class InvalidArgument(ConfigError):
    """A constructor argument out of its range, raised where the value enters: the ``__init__`` (or the build,
    for ranges that depend on the data) of the class that received it.

    ``owner`` is the config group of a class the CLI always places at one key (``"model"``, ``"data"``), or
    else the component itself, which does not know its key: the message then names the class
    (``UserItemGraph: num_layers must be >= 0, got -1``), and whoever knows the key (``RecModule`` for its
    components, the CLI for what it instantiates) re-raises the error :meth:`at` it:
    ``model.encoders[1].init_args.num_layers must be >= 0, got -1 (UserItemGraph)``.
    """

    def __init__(self, owner: object, argument: str, value: object, rule: str) -> None:
        self.owner, self.argument, self.value, self.rule = owner, argument, value, rule
        if isinstance(owner, str):
            super().__init__(f"{owner}.{argument} must be {rule}, got {value!r}")
        else:
            self.owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
            super().__init__(f"{self.owner_name}: {argument} must be {rule}, got {value!r}")

    def at(self, key: str) -> ConfigError:
        """The same error, named by the config key of the component that raised it (``model.encoders[1]``)."""
        return ConfigError(
            f"{key}.init_args.{self.argument} must be {self.rule}, got {self.value!r} ({self.owner_name})"
        )


def check_number(
    owner: object, argument: str, value: float, low: float | None = None, high: float | None = None,
    *, low_open: bool = False, high_open: bool = False,
) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` is a finite number in the interval from ``low`` to ``high``
    (closed unless ``low_open``/``high_open``; ``None``: unbounded). NaN and infinities always fail."""
    finite = not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    )
    above = low is None or (finite and (value > low if low_open else value >= low))
    below = high is None or (finite and (value < high if high_open else value <= high))
    if finite and above and below:
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        rule = f"{'<' if high_open else '<='} {high}"
    else:
        rule = "a finite number"
    raise InvalidArgument(owner, argument, value, rule)


MAX_LAYERS = 100
"""Most layers (or recursions) any component accepts: each one costs a propagation or a weight matrix, so a
typo like ``num_layers: 1000000`` would exhaust memory or hang instead of failing; published models use <= 10."""


def check_layers(owner: object, argument: str, value: int) -> None:
    """A layer or recursion count: in ``[0, MAX_LAYERS]``."""
    check_number(owner, argument, value, 0, MAX_LAYERS)


def check_probability(owner: object, argument: str, value: float) -> None:
    """A dropout or drop rate: in ``[0, 1)`` (1 would drop everything)."""
    check_number(owner, argument, value, 0, 1, high_open=True)


class RecComponent(nn.Module, ABC):
    """Root of every configurable recplug component."""

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams_repr().items())

    def hparams_repr(self) -> dict[str, object]:
        """Constructor arguments shown in ``repr``; override to list yours."""
        return {}


class FusionModule(RecComponent):
    """Fuses item modality features into one ``[N, d]`` content matrix (hook ``recplug_fuse``).

    The raw features are owned here: received in ``recplug_setup`` and kept as a frozen buffer or, with
    ``trainable_features=True``, as a trainable parameter (the CRANE/FREEDOM code trains them).

    Args:
        trainable_features: train the raw feature tables with the model (default: frozen).
        modalities: use only these modalities (default: all the dataset has, sorted by name).
    """

    def __init__(self, trainable_features: bool = False, modalities: list[str] | None = None) -> None:
        super().__init__()
        self.trainable_features = trainable_features
        self.modalities = list(modalities) if modalities is not None else None
        self.feature_dims: dict[str, int] = {}
        self._features_loaded = False

    min_modalities: int = 1

    def hparams_repr(self) -> dict[str, object]:
        return {"trainable_features": self.trainable_features}

    def recplug_build(self, num_items: int, feature_dims: dict[str, int], embedding_dim: int) -> None:
        chosen = self.modalities if self.modalities is not None else sorted(feature_dims)
        missing = [m for m in chosen if m not in feature_dims]
        if missing:
            raise ConfigError(
                f"model.fusion.init_args.modalities names {missing}, but the data has {sorted(feature_dims)}"
            )
        if len(chosen) < self.min_modalities:
            raise ConfigError(
                f"{type(self).__name__} needs at least {self.min_modalities} item modalities but the data has "
                f"{sorted(feature_dims)}; set model.fusion to null or use data with item features"
            )
        self.feature_dims = {m: feature_dims[m] for m in chosen}
        self.embedding_dim = embedding_dim
        self._features_loaded = False  # fresh (zero) tables below: the next setup must fill them
        for m, dim in self.feature_dims.items():
            table = torch.zeros(num_items, dim)
            if self.trainable_features:  # trained with the model, so saved in checkpoints
                self.register_parameter(f"raw_{m}", nn.Parameter(table))
            else:  # frozen: comes from the data at setup, never from a checkpoint
                self.register_buffer(f"raw_{m}", table, persistent=False)
        self.build(self.feature_dims, embedding_dim)

    @abstractmethod
    def build(self, feature_dims: dict[str, int], embedding_dim: int) -> None:
        """Create the projection/attention layers for these modality widths."""

    def recplug_setup(self, data: InteractionData) -> None:
        if self._features_loaded:  # a later stage of the same run: keep (possibly trained) features
            return
        with torch.no_grad():
            for m in self.feature_dims:
                getattr(self, f"raw_{m}").copy_(data.features[m])
        self._features_loaded = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if any(f"{prefix}raw_{m}" in state_dict for m in self.feature_dims):
            self._features_loaded = True  # trained features came from a checkpoint: setup must not reset them

    def features(self) -> dict[str, Tensor]:
        """The raw feature tables ``{modality: [N, d_m]}`` in the order the fusion uses."""
        return {m: getattr(self, f"raw_{m}") for m in self.feature_dims}

    @abstractmethod
    def recplug_fuse(self) -> Tensor:
        """Return the fused ``[N, embedding_dim]`` item content."""


class GraphEncoder(RecComponent):
    """Produces one named view of users and items (hook ``recplug_encode``).

    Args:
        name: the view's name, used by aux losses and in error messages.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.view_name = name

    def hparams_repr(self) -> dict[str, object]:
        return {"name": self.view_name}

    @abstractmethod
    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None) -> GraphView:
        """Return this encoder's :class:`GraphView`."""


class Combiner(RecComponent):
    """Combines all views into the final ``(users, items)`` embeddings (hook ``recplug_combine``)."""

    @abstractmethod
    def recplug_combine(self, views: list[GraphView]) -> tuple[Tensor, Tensor]:
        """Return ``(users [M, d_out], items [N, d_out])``."""


class AuxLoss(RecComponent):
    """An auxiliary loss returning named, weighted terms (hook ``recplug_aux_loss``).

    Args:
        weight: multiplier applied to every term this loss returns.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        check_number(self, "weight", weight, 0)
        self.weight = weight

    def hparams_repr(self) -> dict[str, object]:
        return {"weight": self.weight}

    @abstractmethod
    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        """Return ``{term name: weighted scalar loss}``."""

