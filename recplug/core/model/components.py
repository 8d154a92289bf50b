"""Base classes of the components a bundle YAML selects.

They are ``nn.Module``s (so their parameters are trained and checkpointed) and ABCs (so jsonargparse never
offers a base class as a choice). Each declares the hook that defines its role; subclasses implement it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import torch
from torch import Tensor, nn

from recplug.core.errors import ConfigError, check_number
from recplug.core.data.dataset import InteractionData
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput


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

