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
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from recplug.core.errors import ConfigError, RecplugError

# Lightning's own ckpt_path keywords ("the best/last checkpoint of this trainer"): resolved by the Trainer
TRAINER_KEYWORDS = ("best", "last", "hpc", "registry")
URL_SCHEMES = ("http://", "https://", "file://")


class CheckpointError(RecplugError, ValueError):
    """A checkpoint that cannot or must not be loaded: names the file and why."""


def refuse_unsafe_loading(weights_only: bool | None) -> None:
    """Refuse an explicit ``weights_only=False``: recplug never unpickles arbitrary objects."""
    if weights_only is False:
        raise ConfigError(
            "weights_only: false is refused: recplug opens checkpoints weights-only, since unpickling arbitrary objects "
            "runs their code (docs/security.md); remove the setting"
        )


def local_checkpoint(location: str | Path) -> Path:
    """A local file for the checkpoint at ``location``: a local path as it is; a URL (``http(s)://``,
    ``file://``) downloaded into a new temporary folder (removed at exit), so no download is ever reused by name.
    Open it with :func:`open_checkpoint`."""
    text = str(location)
    if "://" not in text:
        return Path(text).expanduser()
    if not text.startswith(URL_SCHEMES):
        raise CheckpointError(f"{text}: unsupported URL scheme; give a local path or an http(s):// or file:// URL")
    from recplug.core.data.download import download

    folder = Path(tempfile.mkdtemp(prefix="recplug-ckpt-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return download(text, folder / (Path(text.split("?")[0].rstrip("/")).name or "checkpoint.ckpt"), progress=False)


def open_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a local checkpoint file, with one-line errors.

    Raises :class:`CheckpointError` when the file is missing, not a PyTorch file (truncated, random bytes),
    holds objects other than tensors and plain data (a pickle payload), or is not a Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in first.lower() or "weights_only" in first.lower():
            raise CheckpointError(
                f"{path}: refused: it holds objects other than tensors and plain data, and recplug never "
                "unpickles arbitrary objects (a checkpoint from an untrusted source can run code)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    except Exception as exc:  # untrusted bytes: the unpickler fails in any way (IndexError, KeyError, EOFError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or not a PyTorch file ({first[:160]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (it has no state_dict)")
    return checkpoint


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
