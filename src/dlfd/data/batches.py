"""Batches as the user's loaders make them (``(x, y)``, ``(x, y, extra...)`` or dicts such as
``{"image": x, "label": y}``), seen as the ``(inputs, labels)`` pairs dlfd reads, so every
method, the evaluation and the audit run unchanged on the user's own DataLoaders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor

from dlfd.errors import ConfigError

#: Keys tried in a dict batch when none are given, in this order.
INPUT_KEYS = ("inputs", "input", "image", "images", "pixel_values", "x")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def _pick(batch: Mapping[str, Any], key: str | None, candidates: Sequence[str], what: str) -> Any:
    if key is not None:
        if key not in batch:
            raise ConfigError(f"dict batch has no {what} key {key!r}; its keys: {sorted(batch)}")
        return batch[key]
    for candidate in candidates:
        if candidate in batch:
            return batch[candidate]
    raise ConfigError(
        f"dict batch has none of the {what} keys {', '.join(candidates)} (its keys: "
        f"{sorted(batch)}); name it with batch_keys=(input_key, label_key)"
    )


def as_pair(
    batch: Any, input_key: str | None = None, label_key: str | None = None
) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` of one batch: a tuple/list's first two items or a dict's keys."""
    if isinstance(batch, Mapping):
        pair = (
            _pick(batch, input_key, INPUT_KEYS, "input"),
            _pick(batch, label_key, LABEL_KEYS, "label"),
        )
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        pair = (batch[0], batch[1])
    else:
        raise ConfigError(
            f"a batch must be (inputs, labels, ...) or a dict, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, Sequence) else "")
        )
    if not all(isinstance(item, Tensor) for item in pair):
        kinds = ", ".join(type(item).__name__ for item in pair)
        raise ConfigError(f"a batch's inputs and labels must be tensors, got {kinds}")
    return pair


class PairBatches:
    """``loader`` yielding ``(inputs, labels)``; each iteration restarts it (and its shuffling);
    its length and other attributes are the loader's."""

    def __init__(self, loader: Iterable[Any], keys: tuple[str | None, str | None]) -> None:
        self.loader = loader
        self.keys = keys

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            yield as_pair(batch, *self.keys)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def pair_batches(loader: Any, batch_keys: tuple[str, str] | None = None) -> Any:
    """``loader`` wrapped in :class:`PairBatches` (``batch_keys``: the dict batches' input and
    label keys); ``None`` and an already wrapped loader are returned as they are."""
    if loader is None or isinstance(loader, PairBatches):
        return loader
    input_key, label_key = batch_keys if batch_keys is not None else (None, None)
    return PairBatches(loader, (input_key, label_key))
