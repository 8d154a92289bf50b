"""Checkpoints are opened weights-only by every path (local, remote, the Python API), and a broken, foreign or
unsafe one ends in one line (issue 14). The payload of the malicious checkpoint would create a file: it must not."""

from __future__ import annotations

import functools
import http.server
import os
import random
import shutil
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

from recplug.core.model.checkpoint import CheckpointError, open_checkpoint
from recplug.core.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


class Payload:
    """Unpickling this object runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def recplug(command: str, tmp_path: Path, *extra: str) -> int:
    return main([command, "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.default_root_dir",
                 str(tmp_path), *QUIET, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real checkpoint of a one-epoch MF fit on the embedded default."""
    folder = tmp_path_factory.mktemp("trained")
    assert recplug("fit", folder, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2") == 0
    return next(folder.rglob("last.ckpt"))


@pytest.fixture()
def evil(tmp_path, trained) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a real checkpoint with a code-running object added."""
    marker = tmp_path / "pwned"
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["payload"] = Payload(marker)
    served = tmp_path / "served"
    served.mkdir()
    torch.save(checkpoint, served / "last.ckpt")
    return served / "last.ckpt", marker


@pytest.fixture()
def server(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """``(base URL, folder, requested paths)`` of a real HTTP server on localhost serving ``folder``."""
    folder = tmp_path / "www"
    folder.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            requested.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, requested
    httpd.shutdown()


def last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "no error was printed"
    return lines[-1]


@pytest.mark.parametrize("command", ["test", "validate", "predict", "fit"])
def test_a_remote_checkpoint_with_a_payload_never_runs_it(command, tmp_path, evil, server, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    checkpoint, marker = evil
    base, folder, _ = server
    (folder / "last.ckpt").write_bytes(checkpoint.read_bytes())
    assert recplug(command, tmp_path, "--ckpt_path", f"{base}/last.ckpt") == 2
    message = last_error(capsys)
    assert message.startswith("error: ") and "refused" in message and "last.ckpt" in message
    assert not marker.exists()
    assert not (tmp_path / "torch_home").exists()  # nothing cached under torch.hub's file-name key


def test_a_local_checkpoint_with_a_payload_is_refused_by_every_path(tmp_path, evil, capsys) -> None:
    from recplug.core.model.module import RecModule

    checkpoint, marker = evil
    assert recplug("test", tmp_path, "--ckpt_path", str(checkpoint)) == 2
    assert "refused" in last_error(capsys)
    with pytest.raises(CheckpointError, match="refused"):
        RecModule.load_from_checkpoint(checkpoint)
    assert not marker.exists()


def test_weights_only_false_is_refused_from_the_command_line_config_and_python(tmp_path, trained, capsys) -> None:
    from recplug.core.errors import ConfigError
    from recplug.core.model.module import RecModule

    assert recplug("test", tmp_path, "--ckpt_path", str(trained), "--weights_only=false") == 2
    assert last_error(capsys).startswith("error: weights_only: false is refused")
    config = tmp_path / "unsafe.yaml"
    config.write_text(f"ckpt_path: {trained}\nweights_only: false\n")
    assert recplug("test", tmp_path, "--config", str(config)) == 2
    assert "weights_only: false is refused" in last_error(capsys)
    with pytest.raises(ConfigError, match="weights_only"):
        RecModule.load_from_checkpoint(trained, weights_only=False)


def test_a_remote_checkpoint_that_is_safe_loads_and_is_not_cached_by_name(tmp_path, trained, evil, server, capsys,
                                                                          monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    base, folder, _ = server
    (folder / "last.ckpt").write_bytes(trained.read_bytes())
    assert recplug("test", tmp_path, "--ckpt_path", f"{base}/last.ckpt") == 0
    # the same file name served with a payload afterwards is downloaded again and refused, not replayed
    checkpoint, marker = evil
    (folder / "last.ckpt").write_bytes(checkpoint.read_bytes())
    assert recplug("test", tmp_path, "--ckpt_path", f"{base}/last.ckpt") == 2
    assert not marker.exists() and not (tmp_path / "torch_home").exists()


def test_a_remote_checkpoint_without_a_config_is_downloaded_once(tmp_path, trained, server, monkeypatch) -> None:
    """Without --config, the recorded config and the weights come from one download: it used to fetch twice, and
    a server could answer each fetch with another file."""
    base, folder, requested = server
    (folder / "last.ckpt").write_bytes(trained.read_bytes())
    monkeypatch.chdir(tmp_path)  # the recorded root folder is not taken: the run writes here
    assert main(["test", "--ckpt_path", f"{base}/last.ckpt", *QUIET]) == 0
    assert requested == ["/last.ckpt"]


def test_a_home_folder_of_no_user_is_one_line(tmp_path, capsys) -> None:
    """``~nobody/x.ckpt`` was pathlib's "Could not determine home directory" (fuzz round 5)."""
    assert recplug("test", tmp_path, "--ckpt_path", "~nobodyxyz/x.ckpt") == 2
    assert last_error(capsys) == "error: ckpt_path ~nobodyxyz/x.ckpt: no user 'nobodyxyz' to expand ~ for"


def test_a_missing_remote_checkpoint_is_one_line(tmp_path, server, capsys) -> None:
    base, _, _ = server
    assert recplug("test", tmp_path, "--ckpt_path", f"{base}/nothing.ckpt") == 2
    assert "nothing.ckpt" in last_error(capsys)


# random bytes with seeds whose unpickling fails in different ways (invalid load key, IndexError, KeyError)
@pytest.mark.parametrize("damage", ["truncated", "random-0", "random-239", "random-254", "empty", "not-a-checkpoint"])
def test_broken_checkpoint_files_are_one_line(damage, tmp_path, trained, capsys) -> None:
    broken = tmp_path / f"{damage}.ckpt"
    raw = trained.read_bytes()
    if damage == "truncated":
        broken.write_bytes(raw[: len(raw) // 2])
    elif damage.startswith("random"):
        broken.write_bytes(random.Random(int(damage.split("-")[1])).randbytes(4096))
    elif damage == "empty":
        broken.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, broken)
    assert recplug("test", tmp_path, "--ckpt_path", str(broken)) == 2
    message = last_error(capsys)
    assert message.startswith(f"error: {broken}: ") and len(message) < 400
    with pytest.raises(CheckpointError):
        open_checkpoint(broken)


def test_a_checkpoint_of_another_model_or_dataset_is_one_line(tmp_path, trained, tiny_folder, capsys) -> None:
    # other model: VBPR's components differ from the recorded MF's; without the record, its state lacks VBPR's
    # content projections
    assert main(["test", "--config", str(ROOT / "configs" / "vbpr.yaml"), "--ckpt_path", str(trained),
                 "--trainer.default_root_dir", str(tmp_path), *QUIET]) == 2
    assert "trained with model.fusion none, but the config has ['ConcatFusion']" in last_error(capsys)
    unrecorded = torch.load(trained, weights_only=True)
    del unrecorded["recplug"]
    torch.save(unrecorded, tmp_path / "unrecorded.ckpt")
    assert main(["test", "--config", str(ROOT / "configs" / "vbpr.yaml"), "--ckpt_path",
                 str(tmp_path / "unrecorded.ckpt"), "--trainer.default_root_dir", str(tmp_path), *QUIET]) == 2
    message = last_error(capsys)
    assert "trained for another dataset or model configuration" in message and "missing" in message
    # other dataset: embedding tables of another size
    assert recplug("test", tmp_path, "--ckpt_path", str(trained), "--data.path", str(tiny_folder)) == 2
    assert "user_embedding.weight is [4000, 64] in the checkpoint, [200, 64] here" in last_error(capsys)


def test_a_checkpoint_of_other_data_of_the_same_shape_warns_or_is_refused_under_strict(tmp_path, trained, capsys,
                                                                                      monkeypatch) -> None:
    # the embedded default with validation and test swapped: the same users, items and shapes, other data
    other = tmp_path / "swapped"
    shutil.copytree(ROOT / "recplug" / "datasets" / "default", other)
    lines = (other / "default.inter").read_text().splitlines()
    swap = {"1": "2", "2": "1", "0": "0"}
    rows = [line.rsplit("\t", 1) for line in lines[1:]]
    (other / "default.inter").write_text("\n".join([lines[0]] + [f"{head}\t{swap[label]}" for head, label in rows]))
    with pytest.warns(UserWarning, match="trained on other data"):
        assert recplug("test", tmp_path, "--ckpt_path", str(trained), "--data.path", str(other)) == 0
    monkeypatch.setenv("RECPLUG_STRICT_CHECKPOINTS", "true")  # any on-word, as every on/off variable (only 1 was)
    assert recplug("test", tmp_path, "--ckpt_path", str(trained), "--data.path", str(other)) == 2
    assert "RECPLUG_STRICT_CHECKPOINTS=1" in last_error(capsys)
    assert recplug("test", tmp_path, "--ckpt_path", str(trained)) == 0  # its own data passes the strict check


@pytest.fixture()
def importable_marker(tmp_path, monkeypatch) -> Path:
    """A module ``recplug_test_side_effect`` on ``sys.path`` whose import creates the returned marker file."""
    marker = tmp_path / "imported"
    (tmp_path / "recplug_test_side_effect.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Foo: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("where", ["hyper_parameters", "recorded config", "instantiator", "framework program"])
def test_a_checkpoint_naming_a_module_to_import_is_refused_before_the_import(
    where, tmp_path, trained, importable_marker, capsys
) -> None:
    checkpoint = torch.load(trained, weights_only=True)
    entry = {"class_path": "recplug_test_side_effect.Foo"}
    if where == "framework program":  # a framework's own module that acts when imported
        where, entry = "recorded config", {"class_path": "torch.utils.model_dump.__main__.Foo"}
    if where == "hyper_parameters":
        checkpoint["hyper_parameters"]["fusion"] = entry
    elif where == "recorded config":
        checkpoint["recplug"]["config"]["model"]["fusion"] = entry
    else:
        checkpoint["hyper_parameters"]["_instantiator"] = "recplug_test_side_effect.Foo"
    torch.save(checkpoint, tmp_path / "named.ckpt")
    assert recplug("validate", tmp_path, "--ckpt_path", str(tmp_path / "named.ckpt")) == 2
    assert "refused" in last_error(capsys)
    assert main(["export", "--ckpt_path", str(tmp_path / "named.ckpt"), "--out", str(tmp_path / "out")]) == 2
    assert "refused" in last_error(capsys)
    assert not importable_marker.exists() and "torch.utils.model_dump.__main__" not in sys.modules


@pytest.mark.parametrize("entry, value", [("hyper_parameters", [1, 2]), ("recplug", "hello"),
                                          ("optimizer_states", [{"garbage": 1}])])
def test_malformed_records_are_one_line(entry, value, tmp_path, trained, capsys) -> None:
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint[entry] = value
    torch.save(checkpoint, tmp_path / "malformed.ckpt")
    with pytest.raises(CheckpointError, match=f"malformed checkpoint: its '{entry}' "):
        open_checkpoint(tmp_path / "malformed.ckpt")
    assert recplug("fit", tmp_path, "--ckpt_path", str(tmp_path / "malformed.ckpt")) == 2  # resuming
    assert "malformed checkpoint" in last_error(capsys)


def _self_list() -> list:
    cycle: list = []
    cycle.append(cycle)
    return cycle


def _shared_lists(levels: int) -> list:
    nested: list = []
    for _ in range(levels):
        nested = [nested, nested]  # one list, reached twice: 2**levels lists when walked
    return nested


def _deep_list(levels: int) -> list:
    nested: list = []
    for _ in range(levels):
        nested = [nested]
    return nested


@pytest.mark.parametrize("where, value, message", [
    ("data_sha256", 5, "its recorded data_sha256 is not a string (5)"),
    ("model", "itself", "recplug.config.model.x contains itself"),
    ("model", _self_list(), "recplug.config.model.x[0] contains itself"),
    ("model", _shared_lists(60), "its records reach more than 100000 mappings and lists"),
    ("hyper_parameters", _deep_list(200), "nests deeper than 100 levels"),
])
def test_malformed_record_contents_are_one_line(where, value, message, tmp_path, trained, capsys) -> None:
    checkpoint = torch.load(trained, weights_only=True)
    if where == "data_sha256":
        checkpoint["recplug"]["data_sha256"] = value
    else:
        record = checkpoint[where] if where == "hyper_parameters" else checkpoint["recplug"]["config"][where]
        record["x"] = record if value == "itself" else value
    path = tmp_path / "malformed.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="malformed checkpoint: "):
        open_checkpoint(path)
    assert main(["export", "--ckpt_path", str(path), "--out", str(tmp_path / "out")]) == 2
    error = last_error(capsys)
    assert error.startswith(f"error: {path}: malformed checkpoint: ") and error.endswith(message)
    assert recplug("validate", tmp_path, "--ckpt_path", str(path)) == 2
    assert message in last_error(capsys)


def test_a_folder_or_foreign_bytes_are_named_for_what_they_are(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file"):
        open_checkpoint(tmp_path)
    (tmp_path / "page.ckpt").write_text("<html>Directory listing</html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        open_checkpoint(tmp_path / "page.ckpt")


def test_a_checkpoint_of_other_components_is_refused_and_its_settings_are_noted(tmp_path, trained, capsys) -> None:
    # LightGCN's state has exactly MF's tables: only the recorded components tell them apart
    assert main(["validate", "--config", str(ROOT / "configs" / "lightgcn.yaml"), "--ckpt_path", str(trained),
                 "--trainer.default_root_dir", str(tmp_path), *QUIET]) == 2
    assert "trained with model.encoders ['IdEmbedding'], but the config has ['UserItemGraph']" in last_error(capsys)
    assert recplug("validate", tmp_path, "--ckpt_path", str(trained), "--model.embedding_dim", "32") == 0
    assert "note: model.embedding_dim is 64 from ckpt_path" in capsys.readouterr().err
    # a component setting other than the trained one is used with the trained weights: said, not refused
    assert recplug("validate", tmp_path, "--ckpt_path", str(trained),
                   "--model.encoders=[{class_path: IdEmbedding, init_args: {name: ids}}]") == 0
    assert "note: model.encoders[0].init_args.name is 'ids' here; ckpt_path" in capsys.readouterr().err
    assert recplug("validate", tmp_path, "--ckpt_path", "last") == 2
    assert "ckpt_path last: no last checkpoint in checkpoint.dirpath" in last_error(capsys)
    assert recplug("validate", tmp_path, "--ckpt_path", "best") == 2
    assert "ckpt_path best: `recplug validate` trains nothing, so there is no best checkpoint" in last_error(capsys)
    unversioned = torch.load(trained, weights_only=True)
    del unversioned["pytorch-lightning_version"]
    torch.save(unversioned, tmp_path / "unversioned.ckpt")
    assert recplug("validate", tmp_path, "--ckpt_path", str(tmp_path / "unversioned.ckpt")) == 2
    assert "malformed checkpoint: no 'pytorch-lightning_version'" in last_error(capsys)
    assert recplug("test", tmp_path, "--ckpt_path", "") == 2
    assert last_error(capsys) == "error: ckpt_path is empty; give a checkpoint's path or URL, or leave it out"


def test_hyper_parameters_that_do_not_fit_the_config_name_the_checkpoint(tmp_path, trained, capsys) -> None:
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["evil_key"] = 3
    torch.save(checkpoint, tmp_path / "extra.ckpt")
    assert recplug("validate", tmp_path, "--ckpt_path", str(tmp_path / "extra.ckpt")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: ckpt_path {tmp_path / 'extra.ckpt'}: its hyper_parameters do not fit this config: "
                       "Subcommand 'validate' does not accept option 'model.evil_key'")
    assert not any("Parsing of ckpt_path" in line for line in err)
