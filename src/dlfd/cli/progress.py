"""Rich progress display for training (an epoch bar and a batch bar with ETA)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dlfd.training import EpochStats, TrainProgress


class RichTrainProgress(TrainProgress):
    """Shows epochs done, the batch within the epoch, last loss/accuracy and ETA."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.epochs: TaskID | None = None
        self.batches: TaskID | None = None

    def start(self, total_epochs: int, first_epoch: int, batches_per_epoch: int) -> None:
        self.progress.start()
        info = f"resumed after epoch {first_epoch}" if first_epoch else ""
        self.epochs = self.progress.add_task(
            f"{self.label} epochs", total=total_epochs, completed=first_epoch, info=info
        )
        self.batches = self.progress.add_task("  batches", total=batches_per_epoch, info="")

    def batch(self, done: int, total: int) -> None:
        if self.batches is not None:
            self.progress.update(self.batches, completed=done, total=total)

    def epoch(self, stats: EpochStats) -> None:
        if self.epochs is not None:
            info = f"loss {stats.loss:.3f} acc {stats.accuracy:.3f} lr {stats.lr:.2g}"
            self.progress.update(self.epochs, completed=stats.epoch, info=info)

    def stop(self) -> None:
        self.progress.stop()
