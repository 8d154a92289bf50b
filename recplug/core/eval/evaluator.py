"""BatchEval: full-ranking evaluation of the module's cached embeddings (GRecX, arXiv 2111.10342; LightGCN's protocol).

:class:`RankingEvaluation` is what ``RecModule`` evaluates validation and test with (its ``evaluation`` argument,
``--eval.*`` on the CLI): embeddings are propagated once per evaluation (``RecModule.cached_embeddings``), each
batch of user ids is searched against every item with the user's seen items masked (train; train and valid at
test time), and :class:`~recplug.core.eval.metrics.FastMetrics` accumulates sums that reduce across DDP processes.
The module logs ``val/recall@20`` ... and ``test/recall@20`` ... for ``ModelCheckpoint``/``EarlyStopping``.
:class:`TopKWriter` is the prediction-writer callback of ``recplug predict``: every user's top-k.
"""

from __future__ import annotations

import contextlib
import copy
import math
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
from recplug.core.data.formats.text import first_repeated
from recplug.core.errors import ConfigError, check_number
from recplug.core.eval.metrics import METRICS, FastMetrics, check_metric_args, hit_matrix, per_user_metrics
from recplug.core.eval.search import Pairs, TorchExactSearch, VectorSearch, csr_pairs
from recplug.core.ops.io import atomic_write

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


def ranked_lists(scores: Tensor, items: Tensor) -> list[tuple[list[int], list[float]]]:
    """Each row of :func:`search_users`' ``(scores, items)`` as ``(item indices, scores)``, best first, its empty
    positions (``-1``: fewer than ``k`` items left to rank) dropped; what ``recplug predict`` writes and
    :meth:`Recommender.recommend` returns."""
    ranked = []
    for row, row_scores in zip(items.tolist(), scores.tolist()):
        kept = [(item, score) for item, score in zip(row, row_scores) if item >= 0]
        ranked.append(([item for item, _ in kept], [score for _, score in kept]))
    return ranked


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
    return truth_hits(topk, users, truth, search.num_items)


def truth_hits(topk: Tensor, users: Tensor, truth: CSR, num_items: int) -> tuple[Tensor, Tensor]:
    """``(hits [B, k], n_truth [B])`` of the ranked ``topk`` items of ``users`` against their ``truth``."""
    truth_rows, truth_items = csr_pairs(*truth, users)
    hits = hit_matrix(topk, truth_rows.to(topk.device), truth_items.to(topk.device), num_items)
    return hits, torch.bincount(truth_rows, minlength=users.numel()).to(topk.device)


def evaluate_users(
    user_emb: Tensor,
    item_emb: Tensor,
    truth: CSR,
    seen: CSR | None = None,
    users: Tensor | None = None,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    search: VectorSearch | None = None,
    batch_size: int = 4096,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Full-ranking metrics of each user outside a Trainer (the paired tests of ``recplug benchmark``):
    ``(users [U], {"recall@20": float64[U], ...})`` for those of ``users`` (default: all) with a held-out item in
    ``truth``, ``seen`` items masked, in batches of ``batch_size`` users."""
    ks, metrics = check_metric_args(ks, metrics)
    search = (search or TorchExactSearch()).build(item_emb)
    indptr = truth[0]
    held_out = (indptr[1:] > indptr[:-1]).nonzero().squeeze(1)
    users = held_out if users is None else users[torch.isin(users, held_out)]
    scores = []
    for start in range(0, users.numel(), batch_size):
        hits, counts = rank_users(user_emb, users[start : start + batch_size], search, ks[-1], truth, seen)
        scores.append(per_user_metrics(hits, counts, ks, metrics))
    table = torch.cat(scores, -1) if scores else torch.zeros(len(metrics), len(ks), 0, dtype=torch.float64)
    return users, {f"{m}@{k}": table[i, j] for i, m in enumerate(metrics) for j, k in enumerate(ks)}


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
    """Full-ranking metrics outside a Trainer (benchmarks, GRMF-X baselines): the mean over users of
    :func:`evaluate_users` (NaN when no user has a held-out item)."""
    _, scores = evaluate_users(user_emb, item_emb, truth, seen, users, ks, metrics, search, batch_size)
    return {name: float(values.mean()) if values.numel() else math.nan for name, values in scores.items()}


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


GROUPS = ("warm", "cold", "coldonly")
"""Metric groups of the item cold-start protocol, beside the all-item metrics, when the data holds cold items out
of training (``data.cold_items``): ``warm`` and ``cold`` rank every item, as the all-item metrics do, and count
only the held-out items that are warm (cold); ``coldonly`` ranks the cold items alone, warm ones removed from
the candidates. The module logs them as ``<stage>_<group>/<metric>@<k>`` (``test_cold/recall@20``)."""


def restrict_csr(csr: CSR, keep: Tensor, relabel: Tensor | None = None) -> CSR:
    """The rows of ``csr`` with only the items where ``keep`` (``BoolTensor[N]``) is true, renamed by ``relabel``
    (``LongTensor[N]``, old id -> new id) when given."""
    indptr, items = csr
    rows = torch.repeat_interleave(torch.arange(indptr.numel() - 1, device=indptr.device), indptr[1:] - indptr[:-1])
    kept = keep[items]
    out = torch.zeros_like(indptr)
    out[1:] = torch.cumsum(torch.bincount(rows[kept], minlength=indptr.numel() - 1), 0)
    items = items[kept]
    return out, relabel[items] if relabel is not None else items


@dataclass(frozen=True)
class ColdGroups:
    """The held-out items of one :class:`EvalTask` split into the :data:`GROUPS`.

    Attributes:
        warm: CSR of each user's held-out warm items (item ids).
        cold: CSR of each user's held-out cold items (item ids).
        cold_items: ``LongTensor[C]`` the cold items, ascending; cold-only ranking uses their positions here.
        cold_truth: ``cold`` in positions of ``cold_items``.
        cold_seen: the task's masked items that are cold, in positions of ``cold_items``.
    """

    warm: CSR
    cold: CSR
    cold_items: Tensor
    cold_truth: CSR
    cold_seen: CSR

    @classmethod
    def of(cls, task: EvalTask) -> ColdGroups:
        assert task.cold is not None
        cold = task.cold.to(task.truth[0].device)
        position = torch.full(cold.shape, -1, dtype=torch.long, device=cold.device)
        cold_items = cold.nonzero().squeeze(1)
        position[cold_items] = torch.arange(cold_items.numel(), device=cold.device)
        return cls(
            restrict_csr(task.truth, ~cold), restrict_csr(task.truth, cold), cold_items,
            restrict_csr(task.truth, cold, position), restrict_csr(task.seen, cold, position),
        )


@dataclass
class _Pass:
    """One validation or test epoch in progress: its task, the user embeddings and the DDP shard count; the cold
    groups, and whether the model scores cold items, under the cold-start protocol."""

    task: EvalTask
    user_emb: Tensor
    real_samples: int | None  # None: the loader is not sharded, every sample is real
    seen_samples: int = 0
    groups: ColdGroups | None = None
    cold_scored: bool = True


class RankingEvaluation:
    """Full-ranking metrics of ``RecModule``'s validation and test, which it logs as ``val/<metric>@<k>`` and
    ``test/<metric>@<k>``. A plain object the module calls from its own hooks (``RecModule(evaluation=...)``;
    ``--eval.*`` on the CLI): :meth:`start` at epoch start, :meth:`update` per batch of user ids,
    :meth:`compute` at epoch end.

    The protocol of LightGCN and GRecX: score every item, mask the user's training items (and validation
    items at test time), rank, and average over users with at least one held-out item (and one training item).
    When the data holds cold items out of training, the same pass also computes the :data:`GROUPS` (``warm``,
    ``cold``, ``coldonly``); a model that cannot score cold items (``start(cold_scored=False)``) gets NaN for
    ``cold`` and ``coldonly``, never metrics of untrained embeddings.

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
        if search is not None and not isinstance(search, VectorSearch):
            raise ConfigError(f"eval.search must be a VectorSearch (TorchExactSearch, FaissFlatSearch, ...), got "
                              f"{type(search).__name__}")
        self.search = search if search is not None else TorchExactSearch()
        self.meter = FastMetrics(self.ks, self.metrics)
        self.group_meters = {group: FastMetrics(self.ks, self.metrics) for group in GROUPS}
        self.cold_search = copy.deepcopy(self.search)  # built on the cold items alone, for ``coldonly``
        self._tasks: dict[str, tuple[EvalTask, ColdGroups | None]] = {}
        self._tasks_of: RecDataModule | None = None
        self._pass: _Pass | None = None

    def check_cutoffs(self, num_items: int) -> None:
        """Refuse cut-offs beyond the catalogue (they rank nothing more and cost ``[B, k]`` memory)."""
        check_number("eval", "ks", self.ks[-1], 1, num_items, bounds="the number of items")

    def _task(
        self, datamodule: RecDataModule, split: str, device: torch.device
    ) -> tuple[EvalTask, ColdGroups | None]:
        """The datamodule's EvalTask for ``split`` and its cold groups (``None`` without cold items), built once
        and kept on ``device``."""
        if self._tasks_of is not datamodule:
            self._tasks, self._tasks_of = {}, datamodule
        found = self._tasks.get(split)
        if found is None or found[0].users.device != device:
            task = datamodule.eval_task(split)
            task = EvalTask(
                task.split, task.users.to(device),
                (task.truth[0].to(device), task.truth[1].to(device)),
                (task.seen[0].to(device), task.seen[1].to(device)),
                task.cold.to(device) if task.cold is not None else None,
            )
            found = self._tasks[split] = (task, ColdGroups.of(task) if task.cold is not None else None)
        return found

    def start(
        self, datamodule: RecDataModule, split: str, user_emb: Tensor, item_emb: Tensor, dataloader: Any,
        cold_scored: bool = True,
    ) -> None:
        """Begin evaluating ``split``: build the search on ``item_emb`` and reset the metrics. ``dataloader`` is
        the epoch's user loader (a ``DistributedSampler`` under DDP pads it with repeats, never counted).
        ``cold_scored``: does the model score cold items from something learned (``RecModule.scores_cold_items``)?
        If not, the ``cold`` and ``coldonly`` groups are NaN."""
        self.check_cutoffs(item_emb.shape[0])
        task, groups = self._task(datamodule, split, user_emb.device)
        self.search.build(item_emb)
        for meter in (self.meter, *self.group_meters.values()):
            meter.to(user_emb.device).reset()
        if groups is not None and cold_scored:
            self.cold_search.build(item_emb[groups.cold_items])
        self._pass = _Pass(task, user_emb, _samples_on_rank(dataloader), groups=groups, cold_scored=cold_scored)

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
        groups, k = run.groups, self.ks[-1]
        if groups is None:
            hits, counts = rank_users(run.user_emb, users, self.search, k, run.task.truth, run.task.seen)
            self.meter.update(hits, counts)
            return
        _, topk = search_users(run.user_emb, users, self.search, k, run.task.seen)
        num_items = self.search.num_items
        self.meter.update(*truth_hits(topk, users, run.task.truth, num_items))
        self.group_meters["warm"].update(*truth_hits(topk, users, groups.warm, num_items))
        if run.cold_scored:
            self.group_meters["cold"].update(*truth_hits(topk, users, groups.cold, num_items))
            _, local = search_users(run.user_emb, users, self.cold_search, k, groups.cold_seen)
            cold_hits = truth_hits(local, users, groups.cold_truth, groups.cold_items.numel())
            self.group_meters["coldonly"].update(*cold_hits)

    def compute(self) -> dict[str, Tensor]:
        """End the epoch: ``{"recall@10": mean, ...}`` summed over every process (the same value on each), and with
        cold items ``{"warm/recall@10": ..., "cold/...", "coldonly/..."}`` too (NaN: the model scores no cold item)."""
        run, values = self._pass, self.meter.compute()
        self._pass = None
        if run is None or run.groups is None:
            return values
        grouped = dict(values)
        for group, meter in self.group_meters.items():
            if group == "warm" or run.cold_scored:
                found = meter.compute()
            else:
                found = {name: torch.full_like(value, math.nan) for name, value in values.items()}
            grouped.update({f"{group}/{name}": value for name, value in found.items()})
        return grouped


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
        repeated = first_repeated(list(exclude))
        if repeated is not None:
            raise ConfigError(f"topk.exclude: {repeated!r} is given twice")
        if not str(output_path).strip():
            raise ConfigError("topk.output_path is empty; give the file to write, e.g. predictions.tsv")
        if Path(output_path).is_dir():
            raise ConfigError(f"topk.output_path: {output_path} is a folder; give the file to write, e.g. "
                              f"{Path(output_path) / 'predictions.tsv'}")
        self.output_path, self.k, self.exclude = Path(output_path), k, list(exclude)
        self.search = search if search is not None else TorchExactSearch()
        self._file: IO[str] | None = None
        self._output = contextlib.ExitStack()  # closing it completes the file
        self._path = self.output_path  # the file written: under DDP, the rank's
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
        self._path, self._output = path, contextlib.ExitStack()
        try:
            if path.exists() and not path.is_file():  # a device or pipe (/dev/stdout): written as a stream
                self._file = self._output.enter_context(open(path, "w", encoding="utf-8"))
            else:  # whole or not at all: a predict that fails midway leaves no partial file
                self._file = self._output.enter_context(atomic_write(path, encoding="utf-8"))
            self._file.write("user\titems\tscores\n")
        except OSError as exc:
            raise self._unwritable(exc) from None

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
        for user, (ranked, ranked_scores) in zip(users.tolist(), ranked_lists(scores.cpu(), items.cpu())):
            names = ",".join(str(item_ids[i] if item_ids else i) for i in ranked)
            values = ",".join(f"{score:.6g}" for score in ranked_scores)
            lines.append(f"{user_ids[user] if user_ids else user}\t{names}\t{values}\n")
        try:
            handle.write("".join(lines))
        except OSError as exc:
            raise self._unwritable(exc) from None

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._state = {}
        if self._file is not None:
            self._file = None
            try:
                self._output.close()  # the file renamed onto output_path
            except OSError as exc:
                raise self._unwritable(exc) from None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._discard(exception)

    def _discard(self, exception: BaseException) -> None:
        """Close the output unfinished: its temporary file is removed, and a stream's unwritten lines are not
        flushed (and reported) again at exit."""
        self._state = {}
        if self._file is not None:
            self._file = None
            with contextlib.suppress(OSError):  # the last flush of a full device fails again
                self._output.__exit__(type(exception), exception, exception.__traceback__)

    def _unwritable(self, exc: OSError) -> ConfigError:
        """The one-line error for an OS error writing the output (``/dev/full``: no space left on device), naming
        the option and file; the output is discarded."""
        self._discard(exc)
        return ConfigError(f"topk.output_path {self._path}: cannot be written ({exc.strerror or exc})")
