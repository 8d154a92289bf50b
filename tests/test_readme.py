"""The README stays true: its set-up commands are what CI runs, and its plugin example works."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    test_command = "bash scripts/setup.sh --dev && .venv/bin/python -m pytest -q"
    assert f"```bash\n{test_command}\n```" in README
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "```bash\nbash scripts/setup.sh && .venv/bin/recplug fit --config configs/crane.yaml\n```" in README


def test_readme_plugin_example_runs(tiny_data) -> None:
    from recplug.core.model.module import RecModule
    from recplug.plugins.embedding import ContentView, IdEmbedding

    code = re.search(r"## Writing a plugin.*?```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    module = RecModule(tiny_data.num_users, tiny_data.num_items, tiny_data.feature_dims, embedding_dim=8,
                       encoders=[IdEmbedding(), ContentView()], fusion=namespace["SoftmaxGateFusion"]())
    module.prepare(tiny_data)
    out = module()
    assert out.content.shape == (tiny_data.num_items, 8)
    out.items.sum().backward()
    assert module.fusion.gate.weight.grad is not None
