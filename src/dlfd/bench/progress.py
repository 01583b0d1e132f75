"""Progress hooks and the log of a benchmark (the CLI passes a rich display for the hooks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dlfd.training import EpochStats, TrainProgress


class BenchProgress:
    """Progress hooks; the default does nothing (the CLI passes a rich display)."""

    def start(self, total: int) -> None: ...
    def begin(self, label: str) -> None: ...
    def advance(self, done: int, total: int, phase: str) -> None: ...
    def end(self, label: str) -> None: ...
    def stop(self) -> None: ...


class TrainAdapter(TrainProgress):
    """Training progress (epochs x batches) as one run's progress."""

    def __init__(self, progress: BenchProgress) -> None:
        self.progress = progress
        self.epochs = self.batches = self.epoch_done = 0

    def start(self, total_epochs: int, first_epoch: int, batches_per_epoch: int) -> None:
        self.epochs, self.batches, self.epoch_done = total_epochs, batches_per_epoch, first_epoch
        self.progress.advance(first_epoch * batches_per_epoch, total_epochs * batches_per_epoch, "")

    def batch(self, done: int, total: int) -> None:
        self.batches = total
        self.progress.advance(self.epoch_done * total + done, self.epochs * total, "epochs")

    def epoch(self, stats: EpochStats) -> None:
        self.epoch_done = stats.epoch


class BenchLog:
    """Timestamped lines appended to ``DIR/bench.log`` and, optionally, echoed."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str, *, echo: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
        if echo and self.echo is not None:
            self.echo(message)
