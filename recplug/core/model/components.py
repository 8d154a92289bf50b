"""Base classes of the components a bundle YAML selects.

They are ``nn.Module``s (so their parameters are trained and checkpointed) and ABCs (so jsonargparse never
offers a base class as a choice). Each declares the hook that defines its role; subclasses implement it.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import Tensor, nn

from recplug.core.errors import ConfigError, InvalidArgument, check_flag, check_name, check_number
from recplug.core.data.dataset import InteractionData
from recplug.core.model.types import BPRBatch, GraphView, ModelOutput, NodePlan, SampledBatch
from recplug.core.ops.sampling import gather_rows

if TYPE_CHECKING:
    from recplug.core.model.sampled import NodeTables


def recording_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that also records the arguments it was called with, defaults included, as ``_init_arguments``.

    A subclass's ``__init__`` runs its base's inside it, so the outermost one, the class's own, records last
    and its arguments are the ones kept."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: RecComponent, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments: dict[str, object] = {}
        for name, parameter in list(signature.parameters.items())[1:]:  # self is not an argument
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(bound.arguments[name])
            else:
                arguments[name] = bound.arguments[name]
        object.__setattr__(self, "_init_arguments", arguments)

    return __init__


class RecComponent(nn.Module, ABC):
    """Root of every configurable recplug component.

    The arguments each component is constructed with are recorded (:attr:`hparams`), so its ``repr`` lists every
    one of them, from its signature, without the component restating them:
    ``UserItemGraph(name='behavior', num_layers=2, edge_drop=0.0, backend='torch')``.
    """

    def __init__(self) -> None:
        """No arguments, so a component without a constructor of its own (a combiner) has the signature ``()``."""
        super().__init__()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = recording_arguments(vars(cls)["__init__"])  # type: ignore[method-assign]

    @property
    def hparams(self) -> dict[str, object]:
        """The constructor arguments, by name in signature order, defaults included."""
        return dict(self.__dict__.get("_init_arguments", {}))

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.hparams.items())

    def reset_parameters(self) -> None:
        """Re-draw the learned weights as when built (PyG's convention): each layer's own ``reset_parameters``
        (``nn.Linear``'s initialisation, which the built-in fusions use). A component initialised otherwise
        overrides this. What it holds as data is kept: raw feature tables, graphs."""
        for module in self.modules():
            if module is not self and not isinstance(module, RecComponent) and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def sampling_refusal(self) -> str | None:
        """Why this component cannot train in sampled mode (``model.sampling``), or ``None`` when it can: it then
        computes from, and returns, the rows of the step's nodes only (see :mod:`recplug.core.model.sampled`).
        A component that does not say so is refused."""
        return "it does not declare one (sampling_refusal)"

    def require_view(self, argument: str, views: list[str]) -> None:
        """Raise :class:`InvalidArgument` unless the view named by this component's ``argument`` (an attribute of
        that name) is one the encoders produce; for :meth:`~recplug.hookspecs.RecplugSpecs.recplug_check`."""
        name = getattr(self, argument)
        if name not in views:
            raise InvalidArgument(self, argument, name, f"the name of a view an encoder produces, one of {views}")


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
        check_flag(self, "trainable_features", trainable_features)
        if modalities is not None and not (
            isinstance(modalities, (list, tuple)) and all(isinstance(m, str) and m for m in modalities)
        ):
            raise InvalidArgument(self, "modalities", modalities, "a list of modality names")
        self.trainable_features = trainable_features
        self.modalities = list(modalities) if modalities is not None else None
        self.feature_dims: dict[str, int] = {}
        self._features_loaded = False
        self._rows: Tensor | None = None

    min_modalities: int = 1

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
        """The raw feature tables ``{modality: [N, d_m]}`` in the order the fusion uses (inside
        :meth:`restricted_to`, only those rows)."""
        tables = {m: getattr(self, f"raw_{m}") for m in self.feature_dims}
        if self._rows is None:
            return tables
        return {m: gather_rows(table, self._rows) for m, table in tables.items()}

    @contextmanager
    def restricted_to(self, items: Tensor) -> Iterator[None]:
        """Fuse only the sorted distinct ``items`` (sampled mode): :meth:`features` gives their rows, trainable
        tables get row-sparse gradients. A fusion with statistics over items (RCA's cross-correlation, a mean
        over the rows it is given) computes them over these items: an estimate of the full-catalogue one."""
        self._rows = items
        try:
            yield
        finally:
            self._rows = None

    def sampling_refusal(self) -> str | None:
        return None  # fusions read their rows through features()

    @abstractmethod
    def recplug_fuse(self) -> Tensor:
        """Return the fused ``[N, embedding_dim]`` item content."""


class GraphEncoder(RecComponent):
    """Produces one named view of users and items (hook ``recplug_encode``).

    Args:
        name: the view's name (``view_name``), used by aux losses and in error messages; unique among the
            encoders, checked when the model is built.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        check_name(self, "name", name)
        self.view_name = name

    @abstractmethod
    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor, content: Tensor | None) -> GraphView:
        """Return this encoder's :class:`GraphView`."""

    sampled_hops: int = 0
    """Fan-outs this encoder uses in sampled mode (``model.sampling.fanouts`` must have at least as many)."""

    def sample(self, batch: SampledBatch) -> NodePlan:
        """Sampled mode, first half: draw the neighbourhood of ``batch.users`` and ``batch.items`` and say which
        ID-embedding and content rows it reads."""
        raise NotImplementedError(f"{type(self).__name__} has no sampled mode")

    def encode_sampled(self, plan: NodePlan, tables: NodeTables) -> GraphView:
        """Sampled mode, second half: the view's rows for ``batch.users`` and ``batch.items``, in that order,
        from the rows ``tables`` gathered for ``plan``."""
        raise NotImplementedError(f"{type(self).__name__} has no sampled mode")


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

    @abstractmethod
    def recplug_aux_loss(self, batch: BPRBatch, output: ModelOutput) -> dict[str, Tensor]:
        """Return ``{term name: weighted scalar loss}``."""

