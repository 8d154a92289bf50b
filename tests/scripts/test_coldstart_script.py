"""scripts/coldstart.py resumes only results of the same bundle config: a result measured with another
``configs/<bundle>.yaml`` (or with none recorded, as the committed ones of commit 1acebe7) is run again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("coldstart_script", ROOT / "scripts" / "coldstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_result_of_another_config_is_run_again_and_one_of_this_config_is_kept(tmp_path, monkeypatch) -> None:
    script = load_script()
    fitted: list[tuple[str, str]] = []

    def fake_fit(bundle, dataset, seed, max_epochs, cold, negatives):
        fitted.append((dataset, bundle))
        return {"seconds": 1.0, "best_epoch": 0, "epochs_run": 1, "test": {}}

    monkeypatch.setattr(script, "fit", fake_fit)
    monkeypatch.setattr(script, "DATASETS", ("a", "b", "c"))
    sha = script.config_sha256("mf")
    (tmp_path / "a_mf_s0.json").write_text(json.dumps({"config_sha256": sha}))  # this config: kept
    (tmp_path / "b_mf_s0.json").write_text(json.dumps({"config_sha256": "0" * 64}))  # another config
    (tmp_path / "c_mf_s0.json").write_text(json.dumps({}))  # none recorded
    script.run_all(tmp_path, [0], 40, 0.2, ["mf"])
    assert fitted == [("b", "mf"), ("c", "mf")]
    assert all(json.loads((tmp_path / f"{d}_mf_s0.json").read_text())["config_sha256"] == sha for d in "abc")
    script.run_all(tmp_path, [0], 40, 0.2, ["mf"])  # everything is now this config's: nothing runs
    assert len(fitted) == 2
