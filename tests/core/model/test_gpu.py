"""Device-agnostic: the same code trains and evaluates on CUDA (skipped where there is no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ROOT = Path(__file__).resolve().parents[3]


def run(config: str, tmp_path: Path, *extra: str) -> int:
    from recplug.core.cli.main import main

    return main(["fit", "--config", str(ROOT / "configs" / config), "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar=false", "--trainer.logger=false", *extra])


@pytest.mark.parametrize("config", ["mf.yaml", "lightgcn.yaml", "crane.yaml", "crane_rca.yaml"])
def test_training_step_and_evaluation_on_cuda(config: str, tmp_path) -> None:
    assert run(config, tmp_path, "--trainer.accelerator=gpu", "--trainer.devices=1",
               "--trainer.max_epochs=1", "--trainer.limit_train_batches=3") == 0


def test_ddp_strategy_on_one_gpu(tmp_path) -> None:
    try:
        assert run("crane.yaml", tmp_path, "--trainer.accelerator=gpu", "--trainer.devices=1",
                   "--trainer.strategy=ddp", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3") == 0
    finally:  # Lightning leaves the NCCL group up; later single-process tests must not inherit it
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_cuda_forward_matches_cpu(tiny_data) -> None:
    from recplug.core.cli.main import run_cli

    cli = run_cli(["--config", str(ROOT / "configs" / "crane_rca.yaml"), "--trainer.logger=false"], run=False)
    model = cli.model
    model.prepare(cli.datamodule.data)
    cpu_users, cpu_items = model.cached_embeddings()
    model = model.cuda()
    model.prepare(cli.datamodule.data)
    gpu_users, gpu_items = model.cached_embeddings()
    torch.testing.assert_close(gpu_users.cpu(), cpu_users, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_items.cpu(), cpu_items, rtol=1e-4, atol=1e-5)
