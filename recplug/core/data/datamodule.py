"""RecDataModule: one LightningDataModule for every dataset format, behind every bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from recplug.core.errors import MAX_SEED, check_flag, check_number
from recplug.core.data.registry import DEFAULT_DATASET
from recplug.core.data.resolve import check_load_arguments, load_dataset
from recplug.core.data.sampler import BPRTrainSet, DrawnAhead, Positives, Triples, check_positives


@dataclass(frozen=True)
class EvalTask:
    """What full-ranking evaluation of one split needs.

    Attributes:
        split: ``"valid"`` or ``"test"``.
        users: ``LongTensor[U]`` users with at least one held-out item in this split and at least one training
            interaction (no model here can score a user it never saw; ``recplug data stats`` counts them).
        truth: CSR ``(indptr[M+1], items)`` of every user's held-out items.
        seen: CSR ``(indptr[M+1], items)`` of the items to mask: train (and valid, when evaluating test).
        cold: ``BoolTensor[N]`` marking the items the cold-start split held out of training
            (``data.cold_items``), else ``None``: evaluation then also reports warm, cold and cold-only groups.
    """

    split: str
    users: Tensor
    truth: tuple[Tensor, Tensor]
    seen: tuple[Tensor, Tensor]
    cold: Tensor | None = None


class RecDataModule(pl.LightningDataModule):
    """Loads a dataset once and serves BPR training batches and user batches for evaluation.

    Args:
        path: a dataset folder (MMRec or LightGCN format), a raw CSV/TSV log, or a registered name (e.g.
            ``"gowalla"``, downloaded into the cache; see docs/data.md); ``"default"`` is the embedded
            multimodal dataset shipped with recplug.
        feature_files: ``{modality: file name}`` in the dataset folder (default: every ``*_feat.npy``).
        batch_size: BPR triples per training step.
        eval_batch_size: users per full-ranking evaluation batch (bounds evaluation memory).
        seed: seed of the sampler (permutation and negatives per epoch).
        cache_dir: where plugins cache expensive artefacts and registered datasets are downloaded (default
            ``$RECPLUG_CACHE`` or ``~/.cache/recplug``).
        format: ``"auto"`` (detect), ``"mmrec"``, ``"lightgcn"`` or ``"raw"`` (a CSV/TSV log, processed with
            :class:`~recplug.core.data.formats.raw.RawOptions` defaults; ``recplug data convert`` offers the other
            options).
        valid_ratio: carve this share of each user's training interactions into a validation split, for datasets
            shipped without one (LightGCN's); 0 keeps the dataset's own splits.
        split_seed: seed of the carved validation split, apart from ``seed`` so that training seeds share it.
        cold_items: hold this share of the items out of training, the item cold-start protocol (0: off; see
            :func:`~recplug.core.data.resolve.hold_out_items` and docs/coldstart.md).
        cold_seed: seed of the held-out items, apart from ``seed`` as ``split_seed`` is.
        cold_negatives: draw BPR negatives among the cold items too (default: they are in the catalogue, so a
            cold item's ID embedding is trained as a negative only); ``False`` draws them among warm items, as if
            the cold items arrived after training (their ID embeddings then stay as initialised).
        positives: how an epoch's positive pairs are drawn: ``"interactions"`` (every training pair once, as
            MMRec) or ``"users"`` (a uniform user, then one of its items, as LightGCN's and NGCF's code).
    """

    def __init__(
        self,
        path: str = DEFAULT_DATASET,
        feature_files: dict[str, str] | None = None,
        batch_size: int = 2048,
        eval_batch_size: int = 4096,
        seed: int = 0,
        cache_dir: str | None = None,
        format: str = "auto",
        valid_ratio: float = 0.0,
        split_seed: int = 0,
        positives: Positives = "interactions",
        cold_items: float = 0.0,
        cold_seed: int = 0,
        cold_negatives: bool = True,
    ) -> None:
        super().__init__()
        check_load_arguments("data", path, feature_files, format, valid_ratio, split_seed, cache_dir, cold_items,
                             cold_seed)
        check_positives(positives, "data.positives")
        check_number("data", "batch_size", batch_size, 1, integer=True)
        check_number("data", "eval_batch_size", eval_batch_size, 1, integer=True)
        check_number("data", "seed", seed, 0, MAX_SEED, integer=True)
        check_flag("data", "cold_negatives", cold_negatives)
        self.path, self.feature_files = path, feature_files
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.positives, self.cold_negatives = positives, cold_negatives
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.draw: Callable[[Triples, torch.Generator], Any] | None = None
        """Set by a model in sampled mode that draws ahead (``RecModule.setup``, ``model.sampling.draw_ahead``):
        drawn for each training batch one batch ahead (:class:`~recplug.core.data.sampler.DrawnAhead`)."""
        # loaded now: counts are linked into the model
        self.data = load_dataset(path, feature_files, format, valid_ratio, split_seed, self.cache_dir,
                                 cold_items=cold_items, cold_seed=cold_seed)

    # ------------------------------------------------------------------ linked into the model
    @property
    def num_users(self) -> int:
        return self.data.num_users

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @property
    def feature_dims(self) -> dict[str, int]:
        return self.data.feature_dims

    # ------------------------------------------------------------------ evaluation
    def eval_task(self, split: str) -> EvalTask:
        """Users, ground truth and items to mask for evaluating ``split`` (valid masks train; test masks
        train and valid)."""
        if split not in self.data.splits:
            raise ValueError(f"{self.data.source}: the dataset has no {split!r} split")
        truth = self.data.user_csr(split)
        seen_splits = ("train",) if split == "valid" else tuple(s for s in ("train", "valid") if s in self.data.splits)
        trained = torch.bincount(self.data.split("train")[0], minlength=self.data.num_users) > 0
        users = ((truth[0][1:] > truth[0][:-1]) & trained).nonzero().squeeze(1)
        cold = self.data.cold_mask() if self.data.cold_items is not None else None
        return EvalTask(split, users, truth, self.data.user_csr(seen_splits), cold)

    def _rank(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this process: its share of each training epoch (:class:`BPRTrainSet`)."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _user_loader(self, users: Tensor) -> DataLoader:
        # Lightning shards this loader across processes (DistributedSampler) under DDP.
        return DataLoader(users, batch_size=self.eval_batch_size, shuffle=False)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        users, items = self.data.split("train")
        trainer = self.trainer
        dataset = BPRTrainSet(
            users, items, self.data.num_items, self.batch_size, self.seed,
            epoch_fn=lambda: trainer.current_epoch if trainer is not None else 0,
            rank_fn=self._rank, positives=self.positives, negative_items=self.negative_items(),
        )
        return DataLoader(dataset if self.draw is None else DrawnAhead(dataset, self.draw), batch_size=None)

    def negative_items(self) -> Tensor | None:
        """The items BPR negatives are drawn from: ``None`` (every item) unless ``cold_negatives`` is off and the
        data holds cold items, then the warm items."""
        if self.cold_negatives or self.data.cold_items is None:
            return None
        return (~self.data.cold_mask()).nonzero().squeeze(1)

    @property
    def validation_split(self) -> str:
        """The split validation evaluates: ``valid``, or ``test`` for datasets that have none (with a warning,
        since selecting epochs on test leaks; carve a validation split instead)."""
        return "valid" if "valid" in self.data.splits else "test"

    def val_dataloader(self) -> DataLoader:
        if self.validation_split == "test":
            rank_zero_warn(
                f"{self.data.source}: the dataset has no validation split, so validation evaluates the test split "
                "and selecting epochs on it leaks; set data.valid_ratio to carve one from train"
            )
        return self._user_loader(self.eval_task(self.validation_split).users)

    def test_dataloader(self) -> DataLoader:
        return self._user_loader(self.eval_task("test").users)

    def predict_dataloader(self) -> DataLoader:
        return self._user_loader(torch.arange(self.data.num_users))
