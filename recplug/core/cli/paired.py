"""Per-user test metrics of finished runs, and paired comparisons between groups of runs.

A run of ``recplug ablate`` or ``recplug benchmark`` stores every test user's metrics of its selected checkpoint
in ``per_user.npz`` beside its ``result.json``. Two models are compared on the users both were tested on, each
user's value averaged over the seeds both finished, with the Wilcoxon signed-rank and paired t-tests,
Holm-corrected across the comparisons (:mod:`recplug.core.eval.significance`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recplug.core.data.formats.features import NUMPY_READ_ERRORS
from recplug.core.errors import ConfigError, DataError, one_line
from recplug.core.ops.io import atomic_write

PER_USER_FILE = "per_user.npz"

FinishedRun = tuple[dict[str, Any], Path]
"""A finished run: its ``result.json`` record and its folder."""


def record_per_user(cli: Any, directory: Path) -> dict[str, Any]:
    """After the CLI tested the best-validation checkpoint: every test user's metrics of those weights (written
    to ``per_user.npz``), the representation size ``X``, epochs trained and whether early stopping ended the run."""
    from pytorch_lightning.callbacks import EarlyStopping

    from recplug.core.eval.evaluator import evaluate_users
    from recplug.core.eval.grmfx import representation_size

    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    evaluation = model.evaluation
    users_emb, items_emb = model.cached_embeddings()
    task = datamodule.eval_task("test")
    users, scores = evaluate_users(users_emb, items_emb, task.truth, task.seen, task.users, evaluation.ks,
                                   evaluation.metrics, evaluation.search)
    with atomic_write(directory / PER_USER_FILE, "wb") as handle:
        np.savez_compressed(handle, users=users.cpu().numpy(), **{name: values.cpu().numpy()
                                                                  for name, values in scores.items()})
    stopped = any(c.stopped_epoch > 0 for c in trainer.callbacks if isinstance(c, EarlyStopping))
    return {"representation_size": representation_size(model), "epochs_trained": int(trainer.current_epoch),
            "max_epochs": int(trainer.max_epochs or -1), "stopped_early": stopped}


def load_per_user(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``per_user.npz`` (never unpickled); one numpy cannot read (truncated, not an ``.npz``
    archive, no ``users``) is a :class:`DataError` naming the file."""
    try:
        stored = np.load(path)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise ValueError("a .npy array, not an .npz archive")
        with stored:
            arrays = {name: stored[name] for name in stored.files}
    except NUMPY_READ_ERRORS as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {one_line(exc, 80)})") from None
    if "users" not in arrays:
        raise DataError(f"{path}: unreadable (no users array)")
    return arrays


def per_user(directory: Path, metric: str) -> dict[int, float]:
    """``{user: value}`` of a finished run's test ``metric`` (e.g. ``test/recall@20``)."""
    path = directory / PER_USER_FILE
    if not path.exists():
        raise ConfigError(f"{path}: missing (the run finished before per-user metrics were stored); delete "
                          f"{directory} and rerun to recompute it")
    stored = load_per_user(path)
    name = metric.split("/", 1)[1]
    if name not in stored:
        stored_metrics = [f for f in stored if f != "users"]
        raise ConfigError(f"{path}: has no {name}; choose --metric among test/{', test/'.join(stored_metrics)}")
    return dict(zip(stored["users"].tolist(), stored[name].tolist()))


def user_means(runs: Sequence[FinishedRun], metric: str, seeds: set[int] | None = None) -> dict[int, float]:
    """Each test user's ``metric`` averaged over the runs (``seeds``: only those seeds' runs), for the users
    every one of those runs tested: the paired tests' unit."""
    values = [per_user(directory, metric) for result, directory in runs if seeds is None or result["seed"] in seeds]
    common = set.intersection(*(set(run) for run in values)) if values else set()
    return {u: statistics.fmean(run[u] for run in values) for u in sorted(common)}


def paired_comparisons(anchor: Sequence[FinishedRun], others: dict[str, Sequence[FinishedRun]],
                       metric: str) -> dict[str, dict[str, Any]]:
    """The paired tests of ``anchor`` against each group of ``others`` on ``metric``, each on the seeds both
    finished and the users both have, with the Holm-adjusted p-values (``wilcoxon_p_holm``, ``ttest_p_holm``)
    across the comparisons. ``mean_difference`` is anchor minus other."""
    from recplug.core.eval.significance import holm, paired_test

    anchor_seeds = {result["seed"] for result, _ in anchor}
    tests: dict[str, dict[str, Any]] = {}
    for name, runs in others.items():
        common = anchor_seeds & {result["seed"] for result, _ in runs}
        ours, theirs = user_means(anchor, metric, common), user_means(runs, metric, common)
        users = sorted(set(ours) & set(theirs))
        tests[name] = vars(paired_test([ours[u] for u in users], [theirs[u] for u in users]))
    for field_name in ("wilcoxon_p", "ttest_p"):
        adjusted = holm([test[field_name] for test in tests.values()])
        for test, value in zip(tests.values(), adjusted):
            test[f"{field_name}_holm"] = value
    return tests
