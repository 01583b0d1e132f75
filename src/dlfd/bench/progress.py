"""A benchmark's progress, as ``(done, total, phase)`` callbacks (:data:`ProgressFn`), and
its log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dlfd.training.runner import ProgressFn, no_progress

logger = logging.getLogger(__name__)


class BenchProgress:
    """A bench's progress as two callbacks: ``overall(runs done, runs, run in progress)`` (the
    phase is ``""`` between runs) and ``run(done, total, phase)`` within the current run."""

    def __init__(self, overall: ProgressFn | None = None, run: ProgressFn | None = None) -> None:
        self.overall = overall or no_progress
        self.advance = run or no_progress
        self.done = self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        self.overall(0, total, "")

    def begin(self, label: str) -> None:
        self.overall(self.done, self.total, label)

    def end(self, label: str) -> None:
        self.done += 1
        self.overall(self.done, self.total, "")

    def training(self, done: int, total: int, phase: str) -> None:  # batches of all epochs
        self.advance(done, total, "epochs")


class BenchLog:
    """Timestamped lines appended to ``DIR/bench.log``; echoed ones also go to this module's
    logger (INFO), which the CLI prints."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str, *, echo: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
        if echo:
            logger.info("%s", message)
