"""BatchEval: full-ranking evaluation as Lightning callbacks (GRecX, arXiv 2111.10342; LightGCN's protocol).

:class:`RankingEvaluator` evaluates validation and test: embeddings are propagated once per evaluation
(``RecModule.cached_embeddings``), each batch of user ids is searched against every item with the user's
seen items masked (train; train and valid at test time), and :class:`~recplug.core.eval.metrics.FastMetrics`
accumulates sums that reduce across DDP processes. It logs ``val/recall@20`` ... and ``test/recall@20`` ...
for ``ModelCheckpoint``/``EarlyStopping``. :class:`TopKWriter` writes every user's top-k for ``recplug predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DistributedSampler

from recplug.core.data.datamodule import EvalTask
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
    sampler = getattr(dataloader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]
    return None


class RankingEvaluator(pl.Callback):
    """Full-ranking validation and test metrics, logged as ``val/<metric>@<k>`` and ``test/<metric>@<k>``.

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
        self._meters = {stage: FastMetrics(self.ks, self.metrics) for stage in ("val", "test")}
        self._tasks: dict[str, EvalTask] = {}
        self._tasks_of: object = None
        self._run: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse cut-offs beyond the catalogue (they rank nothing more and cost ``[B, k]`` memory)."""
        num_items = getattr(pl_module, "num_items", None)
        if stage != "predict" and num_items is not None:
            check_number("eval", "ks", self.ks[-1], 1, num_items, bounds="the number of items")

    def _task(self, trainer: pl.Trainer, split: str, device: torch.device) -> EvalTask:
        """The datamodule's EvalTask for ``split``, built once and kept on ``device``."""
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        if datamodule is None or not hasattr(datamodule, "eval_task"):
            raise RuntimeError("RankingEvaluator needs a RecDataModule (trainer.datamodule.eval_task)")
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

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        split = trainer.datamodule.validation_split if stage == "val" else "test"  # type: ignore[attr-defined]
        task = self._task(trainer, split, pl_module.device)
        users, items = pl_module.cached_embeddings()  # type: ignore[operator]
        self.search.build(items)
        meter = self._meters[stage].to(pl_module.device)
        meter.reset()
        self._meters[stage] = meter
        loader = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        if isinstance(loader, (list, tuple)):
            loader = loader[0]
        self._run = {"task": task, "users": users, "seen_samples": 0, "real_samples": _samples_on_rank(loader)}

    def _batch(self, stage: str, batch: Tensor) -> None:
        run = self._run
        users = batch.to(run["users"].device).long()
        if run["real_samples"] is not None:  # drop the repeats DistributedSampler pads a shard with
            users = users[: max(0, run["real_samples"] - run["seen_samples"])]
            run["seen_samples"] += batch.numel()
        if users.numel() == 0:
            return
        task: EvalTask = run["task"]
        hits, counts = rank_users(run["users"], users, self.search, self.ks[-1], task.truth, task.seen)
        self._meters[stage].update(hits, counts)

    def _end(self, pl_module: pl.LightningModule, stage: str) -> None:
        values = self._meters[stage].compute()  # summed over every process: the same value on each
        for name, value in values.items():
            # sync_dist averages identical values (a no-op) and spares Lightning's DDP warning
            pl_module.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        self._run = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Tensor,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._batch("val", batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Tensor,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._batch("test", batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(pl_module, "test")


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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        num_items = getattr(pl_module, "num_items", None)
        if stage == "predict" and num_items is not None:
            check_number("topk", "k", self.k, 1, num_items, bounds="the number of items")

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule.data  # type: ignore[attr-defined]
        splits = tuple(s for s in self.exclude if s in data.splits)
        users, items = pl_module.cached_embeddings()  # type: ignore[operator]
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
