"""BatchEval: full-ranking evaluation of the module's cached embeddings (GRecX, arXiv 2111.10342; LightGCN's protocol).

:class:`RankingEvaluation` is what ``RecModule`` evaluates validation and test with (its ``evaluation`` argument,
``--eval.*`` on the CLI): embeddings are propagated once per evaluation (``RecModule.cached_embeddings``), each
batch of user ids is searched against every item with the user's seen items masked (train; train and valid at
test time), and :class:`~recplug.core.eval.metrics.FastMetrics` accumulates sums that reduce across DDP processes.
The module logs ``val/recall@20`` ... and ``test/recall@20`` ... for ``ModelCheckpoint``/``EarlyStopping``.
:class:`TopKWriter` is the prediction-writer callback of ``recplug predict``: every user's top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, Sequence, runtime_checkable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DistributedSampler

from recplug.core.data.datamodule import EvalTask, RecDataModule
from recplug.core.data.dataset import SPLITS
from recplug.core.errors import ConfigError, check_number
from recplug.core.eval.metrics import METRICS, FastMetrics, check_metric_args, hit_matrix
from recplug.core.eval.search import Pairs, TorchExactSearch, VectorSearch, csr_pairs

CSR = tuple[Tensor, Tensor]


def search_users(
    user_emb: Tensor, users: Tensor, search: VectorSearch, k: int, seen: CSR | None = None
) -> tuple[Tensor, Tensor]:
    """Top-``k`` ``(scores [B, k], items [B, k])`` of ``users`` (a batch of ids) with their ``seen`` items
    excluded; ``search`` must already be built on the item embeddings."""
    exclude: Pairs | None = csr_pairs(*seen, users) if seen is not None else None
    scores, items = search.search(user_emb[users], k, exclude)
    if not bool(torch.isfinite(scores[items >= 0]).all()):  # an empty position (-1) scores -inf by convention
        raise ConfigError(
            "the model's scores are not finite (its embeddings overflow or are NaN), so nothing can be ranked; "
            "lower model.lr or the loss weights and check train/loss"
        )
    return scores, items


def rank_users(
    user_emb: Tensor,
    users: Tensor,
    search: VectorSearch,
    k: int,
    truth: CSR,
    seen: CSR | None = None,
) -> tuple[Tensor, Tensor]:
    """Search ``users`` (a batch of ids) with their ``seen`` items masked; returns ``(hits [B, k], n_truth [B])``.

    ``search`` must already be built on the item embeddings; CSRs are ``(indptr, items)`` over all users."""
    _, topk = search_users(user_emb, users, search, k, seen)
    truth_rows, truth_items = csr_pairs(*truth, users)
    hits = hit_matrix(topk, truth_rows.to(topk.device), truth_items.to(topk.device), search.num_items)
    counts = torch.bincount(truth_rows, minlength=users.numel()).to(topk.device)
    return hits, counts


def evaluate(
    user_emb: Tensor,
    item_emb: Tensor,
    truth: CSR,
    seen: CSR | None = None,
    users: Tensor | None = None,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    search: VectorSearch | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Full-ranking metrics outside a Trainer (benchmarks, GRMF-X baselines): mean over ``users`` (default:
    every user with a held-out item in ``truth``), ``seen`` items masked, in batches of ``batch_size`` users."""
    search = (search or TorchExactSearch()).build(item_emb)
    metric = FastMetrics(ks, metrics).to(item_emb.device)
    indptr = truth[0]
    if users is None:
        users = (indptr[1:] > indptr[:-1]).nonzero().squeeze(1)
    for start in range(0, users.numel(), batch_size):
        hits, counts = rank_users(user_emb, users[start : start + batch_size], search, metric.ks[-1], truth, seen)
        metric.update(hits, counts)
    return {name: float(value) for name, value in metric.compute().items()}


def _samples_on_rank(dataloader: Any) -> int | None:
    """Real samples of this process's shard when a ``DistributedSampler`` pads shards with repeats.

    ``DistributedSampler`` pads the index list with its first items up to a multiple of the world size and
    deals position ``p`` to rank ``p % world``: rank ``r``'s first ``len(range(r, n, world))`` samples are
    real, the rest repeat users already counted on another rank (``None``: not sharded, all real)."""
    if isinstance(dataloader, (list, tuple)):
        dataloader = dataloader[0]
    sampler = getattr(dataloader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]
    return None


def rec_datamodule(trainer: pl.Trainer | None, needed_by: str) -> RecDataModule:
    """The trainer's datamodule, which evaluation and prediction read their splits from: a
    :class:`~recplug.core.data.datamodule.RecDataModule`, else one error saying how to pass one."""
    datamodule = getattr(trainer, "datamodule", None)  # Lightning's data connector sets it; the class declares none
    if not isinstance(datamodule, RecDataModule):
        given = "no datamodule" if datamodule is None else f"a {type(datamodule).__name__}"
        raise ConfigError(
            f"{needed_by} needs a RecDataModule, got {given}: call trainer.fit/validate/test/predict(module, "
            "datamodule=RecDataModule(...))"
        )
    return datamodule


@runtime_checkable
class EmbeddingModel(Protocol):
    """What ranking needs of a model: its catalogue size and final embeddings (``RecModule`` is one)."""

    num_items: int

    def cached_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final ``(users [M, d], items [N, d])``, computed once until the next training step."""
        ...


@dataclass
class _Pass:
    """One validation or test epoch in progress: its task, the user embeddings and the DDP shard count."""

    task: EvalTask
    user_emb: Tensor
    real_samples: int | None  # None: the loader is not sharded, every sample is real
    seen_samples: int = 0


class RankingEvaluation:
    """Full-ranking metrics of ``RecModule``'s validation and test, which it logs as ``val/<metric>@<k>`` and
    ``test/<metric>@<k>``. A plain object the module calls from its own hooks (``RecModule(evaluation=...)``;
    ``--eval.*`` on the CLI): :meth:`start` at epoch start, :meth:`update` per batch of user ids,
    :meth:`compute` at epoch end.

    The protocol of LightGCN and GRecX: score every item, mask the user's training items (and validation
    items at test time), rank, and average over users with at least one held-out item.

    Args:
        ks: cut-offs (``--eval.ks``).
        metrics: among ``recall ndcg precision hit mrr map`` (``--eval.metrics``).
        search: top-k search (``--eval.search``); default exact :class:`TorchExactSearch`. Approximate
            indexes (IVF, HNSW) change the metrics: use them only where exact search is too slow.
    """

    def __init__(
        self,
        ks: list[int] = [10, 20],  # noqa: B006 - jsonargparse shows it; copied below, never mutated
        metrics: list[str] = ["recall", "ndcg", "precision", "hit", "mrr", "map"],  # noqa: B006
        search: VectorSearch | None = None,
    ) -> None:
        self.ks, self.metrics = check_metric_args(ks, metrics, "eval.")
        self.search = search if search is not None else TorchExactSearch()
        self.meter = FastMetrics(self.ks, self.metrics)
        self._tasks: dict[str, EvalTask] = {}
        self._tasks_of: RecDataModule | None = None
        self._pass: _Pass | None = None

    def check_cutoffs(self, num_items: int) -> None:
        """Refuse cut-offs beyond the catalogue (they rank nothing more and cost ``[B, k]`` memory)."""
        check_number("eval", "ks", self.ks[-1], 1, num_items, bounds="the number of items")

    def _task(self, datamodule: RecDataModule, split: str, device: torch.device) -> EvalTask:
        """The datamodule's EvalTask for ``split``, built once and kept on ``device``."""
        if self._tasks_of is not datamodule:
            self._tasks, self._tasks_of = {}, datamodule
        task = self._tasks.get(split)
        if task is None or task.users.device != device:
            task = datamodule.eval_task(split)
            task = EvalTask(
                task.split, task.users.to(device),
                (task.truth[0].to(device), task.truth[1].to(device)),
                (task.seen[0].to(device), task.seen[1].to(device)),
            )
            self._tasks[split] = task
        return task

    def start(
        self, datamodule: RecDataModule, split: str, user_emb: Tensor, item_emb: Tensor, dataloader: Any
    ) -> None:
        """Begin evaluating ``split``: build the search on ``item_emb`` and reset the metrics. ``dataloader`` is
        the epoch's user loader (a ``DistributedSampler`` under DDP pads it with repeats, never counted)."""
        self.check_cutoffs(item_emb.shape[0])
        task = self._task(datamodule, split, user_emb.device)
        self.search.build(item_emb)
        self.meter = self.meter.to(user_emb.device)
        self.meter.reset()
        self._pass = _Pass(task, user_emb, _samples_on_rank(dataloader))

    def update(self, users: Tensor) -> None:
        """Rank a batch of user ids (seen items masked) and add their hits to the metrics."""
        run = self._pass
        if run is None:
            raise RuntimeError("RankingEvaluation.update before start(): start each evaluation epoch first")
        batch_size = users.numel()
        users = users.to(run.user_emb.device).long()
        if run.real_samples is not None:  # drop the repeats DistributedSampler pads a shard with
            users = users[: max(0, run.real_samples - run.seen_samples)]
            run.seen_samples += batch_size
        if users.numel() == 0:
            return
        hits, counts = rank_users(run.user_emb, users, self.search, self.ks[-1], run.task.truth, run.task.seen)
        self.meter.update(hits, counts)

    def compute(self) -> dict[str, Tensor]:
        """End the epoch: ``{"recall@10": mean, ...}`` summed over every process (the same value on each)."""
        values = self.meter.compute()
        self._pass = None
        return values


class TopKWriter(BasePredictionWriter):
    """Writes every user's top-``k`` items for ``recplug predict``, known interactions excluded.

    Output: a tab-separated file with header ``user  items  scores``, one line per user, items and scores
    comma-separated in rank order (raw ids when the dataset kept them, else 0-based ids). Fewer than ``k``
    items are written when the catalogue minus the excluded items is shorter. Under DDP each process writes
    ``<output_path>.rank<r>`` (the predict loader is sharded without repeats).

    Args:
        output_path: the TSV file to write.
        k: items per user.
        exclude: splits whose items are never recommended; default train and valid, so the output can be
            compared with the test split; add ``test`` to recommend only unseen items in deployment.
        search: top-k search (default exact :class:`TorchExactSearch`).
    """

    def __init__(
        self,
        output_path: str = "predictions.tsv",
        k: int = 20,
        exclude: list[str] = ["train", "valid"],  # noqa: B006 - copied, never mutated
        search: VectorSearch | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        check_number("topk", "k", k, 1)
        unknown = [s for s in exclude if s not in SPLITS]
        if unknown:
            raise ConfigError(f"topk.exclude: unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")
        if Path(output_path).is_dir():
            raise ConfigError(f"topk.output_path: {output_path} is a folder; give the file to write, e.g. "
                              f"{Path(output_path) / 'predictions.tsv'}")
        self.output_path, self.k, self.exclude = Path(output_path), k, list(exclude)
        self.search = search if search is not None else TorchExactSearch()
        self._file: IO[str] | None = None
        self._state: dict[str, Any] = {}

    @staticmethod
    def _model(pl_module: pl.LightningModule) -> EmbeddingModel:
        """``pl_module`` as the :class:`EmbeddingModel` the writer ranks with, else one error."""
        if not isinstance(pl_module, EmbeddingModel):
            raise ConfigError(f"TopKWriter ranks with a RecModule's embeddings; {type(pl_module).__name__} has no "
                              "cached_embeddings()")
        return pl_module

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict":
            check_number("topk", "k", self.k, 1, self._model(pl_module).num_items, bounds="the number of items")

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = rec_datamodule(trainer, "TopKWriter").data
        splits = tuple(s for s in self.exclude if s in data.splits)
        users, items = self._model(pl_module).cached_embeddings()
        self.search.build(items)
        seen = tuple(t.to(users.device) for t in data.user_csr(splits)) if splits else None
        self._state = {"users": users, "seen": seen, "user_ids": data.user_ids, "item_ids": data.item_ids}
        path = self.output_path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.name}.rank{trainer.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")
        self._file.write("user\titems\tscores\n")

    def write_on_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Tensor, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        state, handle = self._state, self._file
        assert handle is not None
        users = batch.to(state["users"].device).long()
        scores, items = search_users(state["users"], users, self.search, self.k, state["seen"])
        user_ids, item_ids = state["user_ids"], state["item_ids"]
        lines = []
        for user, row, row_scores in zip(users.tolist(), items.cpu().tolist(), scores.cpu().tolist()):
            kept = [(i, s) for i, s in zip(row, row_scores) if i >= 0]
            names = ",".join(str(item_ids[i] if item_ids else i) for i, _ in kept)
            values = ",".join(f"{s:.6g}" for _, s in kept)
            lines.append(f"{user_ids[user] if user_ids else user}\t{names}\t{values}\n")
        handle.write("".join(lines))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._state = None, {}
