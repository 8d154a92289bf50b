"""Wall time of training epochs and validation passes, for the benches that time runs of the real CLI."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class EpochTimer(pl.Callback):
    """Seconds of each training epoch (``train``) and of each validation pass after the sanity check
    (``validation``).

    Lightning runs the epoch-end validation before ``on_train_epoch_end``, so the validation passes inside a
    training epoch are subtracted from it, as is ``paused``: time a subclass spends inside the epoch on
    measurements of its own.
    """

    def __init__(self) -> None:
        self.train: list[float] = []
        self.validation: list[float] = []
        self.paused = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()
        self.paused = 0.0

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.train.append(time.perf_counter() - self._train_start - self.paused)

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._validation_start
        if not trainer.sanity_checking:
            self.validation.append(seconds)
        self.paused += seconds  # a sanity check runs before the first epoch starts, which resets this
