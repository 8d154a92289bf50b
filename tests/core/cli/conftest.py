"""A trained checkpoint shared by the export, Python API and serving tests: a two-epoch MF fit on the embedded
default, and ``recplug predict``'s top-20 of every user from it (what export, the API and the server must match)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import recplug

from recplug.core.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


@dataclass(frozen=True)
class TrainedRun:
    """``ckpt``: the last checkpoint; ``top20``: ``{user id: (item ids, scores)}`` as ``recplug predict`` wrote."""

    ckpt: Path
    top20: dict[str, tuple[list[str], list[float]]]


@pytest.fixture(scope="session")
def mf_run(tmp_path_factory) -> TrainedRun:
    folder = tmp_path_factory.mktemp("mf_run")
    common = ["--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.default_root_dir", str(folder), *QUIET]
    assert main(["fit", *common, "--trainer.max_epochs=2", "--trainer.limit_train_batches=3"]) == 0
    ckpt = next(folder.rglob("last.ckpt"))
    out = folder / "top20.tsv"
    assert main(["predict", *common, "--ckpt_path", str(ckpt), "--topk.output_path", str(out), "--topk.k=20"]) == 0
    with open(out, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    top20 = {r["user"]: (r["items"].split(","), [float(s) for s in r["scores"].split(",")]) for r in rows}
    return TrainedRun(ckpt, top20)


TIE = 1e-7
"""Scores closer than this are float32 ties: torch's and faiss's sums (or one query row against a batch) may
order them either way (scores here are about 1e-2, float32 rounding of a 64-term dot product about 1e-9)."""


@pytest.fixture(scope="session")
def tie_swaps(mf_run) -> Callable[[list[str], list[str], int], list[int]]:
    """``swaps(got, expected, user)``: the positions where two rankings of ``user`` differ, each checked to be
    a float32 tie (exact float64 scores of the two items within :data:`TIE`); other differences fail."""
    model = torch.load(mf_run.ckpt, weights_only=True)["state_dict"]
    users = model["user_embedding.weight"].double()  # MF: the final embeddings are the ID embeddings
    items = model["item_embedding.weight"].double()

    def swaps(got: list[str], expected: list[str], user: int) -> list[int]:
        assert len(got) == len(expected)
        differ = [j for j, (a, b) in enumerate(zip(got, expected)) if a != b]
        for j in differ:
            a, b = (float(items[int(x)] @ users[user]) for x in (got[j], expected[j]))
            assert abs(a - b) <= TIE, f"user {user}, rank {j}: item {got[j]} ({a}) vs {expected[j]} ({b})"
        return differ

    return swaps


@pytest.fixture(scope="session")
def mf_recommender(mf_run) -> recplug.Recommender:
    """``recplug.Recommender`` on :func:`mf_run`'s checkpoint."""
    return recplug.Recommender.from_checkpoint(mf_run.ckpt)
