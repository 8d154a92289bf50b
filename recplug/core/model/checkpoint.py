"""The one place recplug opens checkpoints: weights only, local or remote, never arbitrary objects.

A checkpoint is a pickle, and unpickling runs whatever code its objects name. Lightning loads remote checkpoints
with ``weights_only=False`` by default, through ``torch.hub``, whose cache is keyed by the file name, so one
poisoned download is replayed for any later URL ending in the same name. recplug instead

* downloads a URL into a fresh temporary file (never ``torch.hub``'s cache) with :func:`recplug.core.data.download.download`,
* opens every checkpoint with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain data,
* refuses ``weights_only: false`` wherever it is given, and
* turns a truncated, foreign or unsafe file into one line naming it.

Every command (``fit``/``validate``/``test``/``predict`` ``--ckpt_path``, the test after fit, ``ablate``) and
``RecModule.load_from_checkpoint`` go through :func:`open_checkpoint`; the threat model is in docs/security.md.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from recplug.core.errors import ConfigError, RecplugError, one_line
from recplug.core.ops.io import expand_home

# Lightning's own ckpt_path keywords ("the best/last checkpoint of this trainer"): resolved by the Trainer
TRAINER_KEYWORDS = ("best", "last", "hpc", "registry")
URL_SCHEMES = ("http://", "https://", "file://")
LIGHTNING_INSTANTIATORS = ("pytorch_lightning.cli.instantiate_module", "lightning.pytorch.cli.instantiate_module")
"""What LightningCLI records as ``hyper_parameters._instantiator``; ``load_from_checkpoint`` imports and calls it."""


class CheckpointError(RecplugError, ValueError):
    """A checkpoint that cannot or must not be loaded: names the file and why."""


def refuse_unsafe_loading(weights_only: bool | None) -> None:
    """Refuse an explicit ``weights_only=False``: recplug never unpickles arbitrary objects."""
    if weights_only is False:
        raise ConfigError(
            "weights_only: false is refused: recplug opens checkpoints weights-only, since unpickling arbitrary objects "
            "runs their code (docs/security.md); remove the setting"
        )


_DOWNLOADED_FOR_NEXT: dict[str, Path] = {}
"""URLs downloaded with ``keep_for_next``, each handed to the next :func:`local_checkpoint` of the same URL."""


def local_checkpoint(location: str | Path, keep_for_next: bool = False) -> Path:
    """A local file for the checkpoint at ``location``: a local path as it is; a URL (``http(s)://``,
    ``file://``) downloaded into a new temporary folder (removed at exit), so no download is ever reused by name.
    With ``keep_for_next``, the next call for the same URL in this process takes this download rather than
    fetching it again (the CLI reads a URL's recorded config, then its weights: one download, one content).
    Open it with :func:`open_checkpoint`."""
    text = str(location)
    if "://" not in text:
        return expand_home(text, "ckpt_path")
    if text in _DOWNLOADED_FOR_NEXT:
        return _DOWNLOADED_FOR_NEXT.pop(text)
    if not text.startswith(URL_SCHEMES):
        raise CheckpointError(f"{text}: unsupported URL scheme; give a local path or an http(s):// or file:// URL")
    from recplug.core.data.download import download

    folder = Path(tempfile.mkdtemp(prefix="recplug-ckpt-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = download(text, folder / (Path(text.split("?")[0].rstrip("/")).name or "checkpoint.ckpt"), progress=False)
    if keep_for_next:
        _DOWNLOADED_FOR_NEXT[text] = path
    return path


def open_checkpoint(path: str | Path, map_location: Any = "cpu", shown: str | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a local checkpoint file, with one-line errors naming ``shown``
    (default: ``path``; a downloaded checkpoint is named by its URL, not its temporary file).

    Raises :class:`CheckpointError` when the file is missing, not a PyTorch file (truncated, random bytes),
    holds objects other than tensors and plain data (a pickle payload), is not a Lightning checkpoint, or its
    records are malformed or name code to import (:func:`check_records`).
    """
    path = Path(path)
    shown = shown or str(path)
    if path.is_dir():
        raise CheckpointError(f"{shown}: a folder, not a checkpoint file")
    if path.exists() and not path.is_file():  # /dev/null, a named pipe (reading one could block)
        raise CheckpointError(f"{shown}: a device or pipe, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{shown}: no such checkpoint file")
    with open(path, "rb") as handle:
        start = handle.read(2)
    if not zipfile.is_zipfile(path) and start[:1] != b"\x80":  # neither torch.save's zip nor a pickle
        raise CheckpointError(f"{shown}: not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in first.lower() or "weights_only" in first.lower():
            raise CheckpointError(
                f"{shown}: refused: it holds objects other than tensors and plain data, and recplug never "
                "unpickles arbitrary objects (a checkpoint from an untrusted source can run code)"
            ) from None
        raise CheckpointError(f"{shown}: not a readable checkpoint ({first[:160]})") from None
    except Exception as exc:  # untrusted bytes: the unpickler fails in any way (IndexError, KeyError, EOFError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{shown}: not a readable checkpoint, truncated or not a PyTorch file ({first[:160]})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{shown}: not a Lightning checkpoint (it has no state_dict)")
    check_records(shown, checkpoint)
    return checkpoint


TRUSTED_NAMESPACES = (
    "recplug", "torch.optim", "pytorch_lightning.loggers", "pytorch_lightning.callbacks", "lightning.pytorch.loggers",
    "lightning.pytorch.callbacks",
)
"""The packages whose modules a recorded config names (recplug's components; the frameworks' optimisers, loggers
and callbacks) and whose import runs nothing but their definitions. Not whole frameworks: torch alone ships modules
that act when imported (``torch.utils.model_dump.__main__`` parses ``sys.argv``)."""


def _trusted_module(module: str) -> bool:
    """Whether importing ``module`` runs no code a checkpoint chose: one already imported, one under
    :data:`TRUSTED_NAMESPACES`, or one of an installed recplug plugin (the ``recplug`` entry-point group: code the
    user installed); never a ``__main__`` module, which is a program."""
    if module in sys.modules:
        return True
    if "__main__" in module.split("."):
        return False
    if any(module == name or module.startswith(name + ".") for name in TRUSTED_NAMESPACES):
        return True
    return module.split(".")[0] in {ep.module.split(".")[0] for ep in importlib.metadata.entry_points(group="recplug")}


MAX_RECORD_DEPTH = 100
"""Deepest nesting of a checkpoint's records: recplug's configs nest about ten levels."""
MAX_RECORD_CONTAINERS = 100_000
"""Most mappings and lists a checkpoint's records reach, each counted wherever it is reached: a pickle may share
one list many times over (60 lists, each holding the next twice, reach 2**60), which would never be walked."""


def _named_code(shown: str, records: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, dotted name)`` of every ``class_path`` (and Lightning's ``_class_path`` / ``_instantiator``) in a
    checkpoint's records: the names the CLI or Lightning would import. Records that contain themselves, nest
    deeper than :data:`MAX_RECORD_DEPTH` or reach more than :data:`MAX_RECORD_CONTAINERS` mappings and lists are
    malformed (:class:`CheckpointError`): walking them, as the config parser does, would never end."""
    named: list[tuple[str, str]] = []
    reached = 0

    def walk(value: Any, key: str, above: tuple[int, ...]) -> None:
        nonlocal reached
        if not isinstance(value, (dict, list, tuple)):
            return
        if id(value) in above:
            raise CheckpointError(f"{shown}: malformed checkpoint: {one_line(key, 80)} contains itself")
        if len(above) == MAX_RECORD_DEPTH:
            raise CheckpointError(f"{shown}: malformed checkpoint: {one_line(key, 80)} nests deeper than "
                                  f"{MAX_RECORD_DEPTH} levels")
        reached += 1
        if reached > MAX_RECORD_CONTAINERS:
            raise CheckpointError(f"{shown}: malformed checkpoint: its records reach more than "
                                  f"{MAX_RECORD_CONTAINERS} mappings and lists")
        inside = (*above, id(value))
        if isinstance(value, dict):
            for name, item in value.items():
                if name in ("class_path", "_class_path", "_instantiator") and isinstance(item, str):
                    named.append((f"{key}.{name}" if key else name, item))
                else:
                    walk(item, f"{key}.{name}" if key else str(name), inside)
        else:
            for i, item in enumerate(value):
                walk(item, f"{key}[{i}]", inside)

    walk(records, "", ())
    return named


def check_records(shown: str, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint whose ``hyper_parameters`` or ``recplug`` record is not a mapping, whose
    ``optimizer_states`` are not optimiser state dicts (resuming read them with a traceback), whose recorded
    ``data_sha256`` is no string, whose records contain themselves or nest without end (:func:`_named_code`), or
    whose records name a class (or Lightning instantiator) in a module that is not recplug's, not already imported
    and not an installed recplug plugin's: the CLI would import it to rebuild the model, and importing a module runs
    its code before any type check (docs/security.md)."""
    for entry in ("hyper_parameters", "recplug"):
        if entry in checkpoint and not isinstance(checkpoint[entry], dict):
            raise CheckpointError(
                f"{shown}: malformed checkpoint: its {entry!r} entry is a {type(checkpoint[entry]).__name__}, "
                "not a mapping"
            )
    states = checkpoint.get("optimizer_states")
    if states is not None and not (
        isinstance(states, list) and all(isinstance(x, dict) and {"state", "param_groups"} <= set(x) for x in states)
    ):
        raise CheckpointError(f"{shown}: malformed checkpoint: its 'optimizer_states' are not optimiser state dicts")
    record = checkpoint.get("recplug") or {}
    if "config" in record and not isinstance(record["config"], dict):
        raise CheckpointError(f"{shown}: malformed checkpoint: its recorded config is not a mapping")
    if record.get("data_sha256") is not None and not isinstance(record["data_sha256"], str):
        raise CheckpointError(f"{shown}: malformed checkpoint: its recorded data_sha256 is not a string "
                              f"({one_line(repr(record['data_sha256']), 80)})")
    for key, name in _named_code(shown, {"hyper_parameters": checkpoint.get("hyper_parameters"), "recplug": record}):
        module = name.rpartition(".")[0]
        if key.endswith("_instantiator"):
            if name not in LIGHTNING_INSTANTIATORS:
                raise CheckpointError(f"{shown}: refused: {key} is {name!r}, not Lightning's instantiator; "
                                      "loading would call it")
        elif module and not _trusted_module(module):
            raise CheckpointError(
                f"{shown}: refused: {key} names {name!r}, whose module is not loaded, not recplug's, not a "
                "framework's optimiser, logger or callback module and no installed recplug plugin's; importing it "
                "could run its code"
            )


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with loading routed through :func:`open_checkpoint` (weights only).

    The Trainer loads ``ckpt_path`` (resume, validate/test/predict, the best checkpoint after fit) through its
    strategy's ``checkpoint_io``; the CLI installs this one, so no command unpickles arbitrary objects.
    """

    def load_checkpoint(
        self, path: Any, map_location: Callable | Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        refuse_unsafe_loading(weights_only)
        return open_checkpoint(local_checkpoint(path), map_location=map_location)


CHECKPOINT_PATH_KEYS = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")
"""The paths a ``ModelCheckpoint`` callback's saved state holds (besides its ``best_k_models`` keys)."""


def absolute_checkpoint_paths(checkpoint: dict[str, Any]) -> None:
    """Make the relative paths in ``checkpoint``'s ``ModelCheckpoint`` states absolute, from the current folder.

    A run logging under a relative folder (the bundles' ``save_dir: runs``) saves its checkpoint folder as given,
    ``runs/mf/version_0/checkpoints``, but a resumed run's ``ModelCheckpoint`` holds the absolute form. Lightning
    compares the two as strings, so it dropped the best score on resume (a worse epoch could then become the
    "best" one tested) and wrote ``last-v1.ckpt`` beside a stale ``last.ckpt``."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not (isinstance(key, str) and key.startswith("ModelCheckpoint") and isinstance(state, dict)):
            continue
        for name in CHECKPOINT_PATH_KEYS:
            if _relative_local_path(state.get(name)):
                state[name] = os.path.realpath(state[name])
        models = state.get("best_k_models")
        if isinstance(models, dict):
            state["best_k_models"] = {os.path.realpath(p) if _relative_local_path(p) else p: score
                                      for p, score in models.items()}


def _relative_local_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value and not os.path.isabs(value)


def check_state_matches(path: str, checkpoint: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose weights do not fit the model built here (another dataset or bundle), naming
    the first differing tensor and the missing/unexpected keys, before Lightning's multi-line error."""
    saved = checkpoint["state_dict"]
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{key} is {list(saved[key].shape)} in the checkpoint, {list(value.shape)} here"
        for key, value in expected.items()
        if key in saved and hasattr(saved[key], "shape") and tuple(saved[key].shape) != tuple(value.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    details = shapes[:1]
    if missing:
        details.append(f"missing {', '.join(missing[:3])}")
    if unexpected:
        details.append(f"unexpected {', '.join(unexpected[:3])}")
    raise CheckpointError(
        f"{path}: trained for another dataset or model configuration ({'; '.join(details)}); "
        "use the config and data it was trained with"
    )
