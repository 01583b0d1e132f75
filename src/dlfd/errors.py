"""The project's own error types.

Every mistake a user can make (bad path, malformed manifest, mismatched checkpoint, invalid
hyperparameter) ends in a subclass of :class:`DlfdError` whose message is one readable line.
The CLI prints that line and exits non-zero; tracebacks are reserved for real bugs (``--debug``).
"""

from __future__ import annotations


class DlfdError(Exception):
    """Base class of every expected, user-facing error in dlfd."""


class DataError(DlfdError):
    """Missing, unreadable or malformed data (images, manifests, forget lists)."""


class SplitError(DataError):
    """An unlearning problem whose splits are inconsistent (leaks, empty sets, unknown items)."""


class LeakError(SplitError):
    """Splits that share people or pictures; carries the leak report and the assignment.

    Attributes: ``report`` (:class:`dlfd.data.leakage.LeakReport`), ``assignment`` (split name ->
    sample indices), ``records`` (the :class:`dlfd.data.records.ImageRecords`) and ``level``, so
    that a caller can report every leak or drop them (scenario option ``leaks=drop``).
    """

    def __init__(
        self, message: str, *, report: object, assignment: object, records: object, level: str
    ) -> None:
        super().__init__(message)
        self.report = report
        self.assignment = assignment
        self.records = records
        self.level = level


class CheckpointError(DlfdError):
    """A checkpoint that is missing, corrupt, untrusted or does not match what is asked of it."""


class ConfigError(DlfdError, ValueError):
    """An invalid option or hyperparameter value (also a ValueError, as Python's own are)."""
