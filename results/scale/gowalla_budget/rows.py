"""Rows one sampled training step reads on Gowalla, without and with a node budget (issue 18).

Draws the neighbourhoods of the first three 2048-triple batches of ``configs/lightgcn_gowalla.yaml`` (3 layers,
fan-outs [5, 5, 5]) the way a training step does (``draw_neighbourhoods``), and prints the mean number of seeds
(the batch's distinct users and items) and of distinct nodes whose ID embeddings the step reads.

    RECPLUG_DATA_MIRROR=../shared/data python results/scale/gowalla_budget/rows.py
"""

from __future__ import annotations

import json

import torch

from recplug.core.cli.main import run_cli
from recplug.core.model.sampled import draw_neighbourhoods
from recplug.core.model.types import BPRBatch

BATCHES = 3


def rows_read(sampling: dict[str, object]) -> tuple[float, float]:
    """Mean (seeds, distinct rows read) per step over the first :data:`BATCHES` batches under ``sampling``."""
    cli = run_cli(["--config", "configs/lightgcn_gowalla.yaml", "--data.batch_size", "2048",
                   "--model.sampling", json.dumps(sampling), "--trainer.logger", "false"], run=False)
    data, model = cli.datamodule, cli.model
    data.setup("fit")
    model.prepare(data.data, getattr(data, "cache_dir", None))
    seeds, rows = [], []
    for index, batch in zip(range(BATCHES), data.train_dataloader()):
        drawn = draw_neighbourhoods(model, BPRBatch(*batch[:3]), torch.Generator().manual_seed(index))
        plan = drawn.plans[0]
        seeds.append(drawn.nodes.users.numel() + drawn.nodes.items.numel())
        rows.append(plan.users.unique().numel() + plan.items.unique().numel())
    return sum(seeds) / BATCHES, sum(rows) / BATCHES


def main() -> None:
    torch.set_num_threads(1)
    for sampling in ({"fanouts": [5, 5, 5]}, {"fanouts": [5, 5, 5], "budget": 4096}):
        seeds, rows = rows_read(sampling)
        print(f"{json.dumps(sampling)}: {seeds:.0f} seeds, {rows:.0f} rows read per step")


if __name__ == "__main__":
    main()
