"""Rich progress bars fed by dlfd's one progress callback, ``(done, total, phase)``."""

from __future__ import annotations

import atexit

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


class RichProgress:
    """A bar named ``label``, called as ``(done, total, phase)`` (total 0: not known yet). It
    starts at the first call and stops when full (``stop_when_done``), at :meth:`stop`, after a
    ``with`` block or at exit, so an error never leaves the cursor hidden."""

    def __init__(self, console: Console, label: str, *, stop_when_done: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.main = self.progress.add_task(label, total=None, info="")
        self.stop_when_done = stop_when_done
        self.started = False

    def __call__(self, done: int, total: int, phase: str) -> None:
        self.update(self.main, done, total, phase)
        if self.stop_when_done and 0 < total <= done:
            self.stop()

    def update(self, task: TaskID, done: int, total: int, phase: str) -> None:
        if not self.started:
            self.started = True
            self.progress.start()
            atexit.register(self.progress.stop)
        self.progress.update(task, completed=done, total=total if total > 0 else None, info=phase)

    def stop(self) -> None:
        self.progress.stop()
        atexit.unregister(self.progress.stop)

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RichBenchProgress(RichProgress):
    """The overall bar (phase: the run in progress) and the current run's (:meth:`run`)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console, "bench", stop_when_done=False)
        self.current = self.progress.add_task("", total=None, info="", visible=False)

    def __call__(self, done: int, total: int, phase: str) -> None:
        super().__call__(done, total, "")
        self.progress.remove_task(self.current)  # a fresh bar per run: its own time and ETA
        self.current = self.progress.add_task(
            f"  {phase}", total=None, info="", visible=bool(phase)
        )

    def run(self, done: int, total: int, phase: str) -> None:
        self.update(self.current, done, total, phase)
