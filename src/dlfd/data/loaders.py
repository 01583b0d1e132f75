"""Torch datasets and loaders over the splits of an :class:`UnlearningProblem`.

Images are decoded once into a shared uint8 cache; a loader's collate step applies the same
:class:`BatchTransform` (normalisation, plus seeded augmentation for training) everywhere. On a
GPU (``ProblemLoaders(..., device=cuda)``) batches travel as uint8 (pinned, stacked by worker
processes) and the transform runs on the GPU, drawing its random numbers from the same CPU
generator in the same order, so the augmentation is the one a CPU run draws.
Batches are ``(inputs, labels)``: float inputs, long labels (multiclass) or float 0/1 labels
(multilabel), so any training code written for standard loaders works unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from dlfd.data.images import load_image
from dlfd.data.problem import UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.transforms import AugmentConfig, BatchTransform, InputSpec
from dlfd.distributed import ShardSampler
from dlfd.errors import ConfigError
from dlfd.runtime import derive_seed, torch_generator


class ImageCache:
    """Decoded images of ``records`` at ``spec``'s size, loaded on first use and kept."""

    def __init__(self, records: ImageRecords, spec: InputSpec) -> None:
        self.records, self.spec = records, spec
        self._images: dict[int, torch.Tensor] = {}

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self._images:
            self._images[index] = load_image(self.records.abspath(index), self.spec)
        return self._images[index]

    def preload(self, indices: np.ndarray) -> None:
        """Decode ``indices`` now (surfaces unreadable files before any training starts)."""
        for i in indices:
            _ = self[int(i)]


class SplitDataset(Dataset):
    """(uint8 image, label) pairs of the samples ``indices`` of a records table."""

    def __init__(self, cache: ImageCache, indices: np.ndarray) -> None:
        self.cache, self.indices = cache, np.asarray(indices, np.int64)
        labels = cache.records.labels[self.indices]
        dtype = torch.long if cache.records.task == "multiclass" else torch.float32
        self.labels = torch.as_tensor(np.asarray(labels), dtype=dtype)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache[int(self.indices[k])], self.labels[k]


def collate(transform: BatchTransform, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple:
    """Stack a list of (uint8 image, label) and turn the images into model inputs."""
    images, labels = stack(batch)
    return transform(images), labels


def stack(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a list of (uint8 image, label) as they are (what a worker process does)."""
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(labels)


class OnDeviceLoader:
    """A loader of uint8 batches whose transform runs on ``device``, in this process and in
    batch order (so its seeded draws are the ones :func:`collate` would make)."""

    def __init__(self, loader: DataLoader, transform: BatchTransform, device: torch.device) -> None:
        self.loader, self.transform, self.device = loader, transform, device
        self.dataset, self.sampler = loader.dataset, loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        copy = {"non_blocking": self.device.type == "cuda"}
        for images, labels in self.loader:
            images, labels = images.to(self.device, **copy), labels.to(self.device, **copy)
            yield self.transform(images), labels


def batch_device(device: torch.device) -> torch.device | None:
    """Where the loaders of a run on ``device`` transform their batches: on a GPU there, on a
    CPU in the loader (None)."""
    return device if device.type == "cuda" else None


class ProblemLoaders:
    """Builds loaders for every split of ``problem`` sharing one decoded-image cache."""

    def __init__(
        self,
        problem: UnlearningProblem,
        spec: InputSpec,
        augment: AugmentConfig | None = None,
        *,
        device: torch.device | None = None,
        workers: int | None = None,
    ) -> None:
        """``device``: batches are transformed there (:class:`OnDeviceLoader`; meant for a
        GPU: uint8 batches are pinned and ``workers`` processes stack them, 2 by default);
        None: on the CPU, in the loader's collate step (``workers`` must then be 0: the
        seeded augmentation runs in this process)."""
        self.problem, self.spec, self.augment = problem, spec, augment
        self.device = device
        self.workers = (2 if device is not None else 0) if workers is None else workers
        if self.workers and device is None:
            raise ConfigError("loader workers need an on-device transform (give a device)")
        self.cache = ImageCache(problem.records, spec)

    def dataset(self, split: str) -> SplitDataset:
        """Dataset of one split (see :data:`dlfd.data.problem.SPLITS`), or ``train``."""
        return SplitDataset(self.cache, self.problem.split(split))

    def loader(
        self,
        split: str,
        *,
        batch_size: int,
        train: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        sampler: Sampler[int] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> DataLoader | OnDeviceLoader:
        """A loader over ``split``; ``train=True`` shuffles and augments, seeded by ``seed``.
        ``drop_last=None`` drops a final training batch of one sample (BatchNorm cannot train on it)
        and keeps everything else. ``sampler`` replaces the seeded shuffle (e.g. a
        ``DistributedSampler``).
        ``shard=(rank, world_size)``: this process's share of a data-parallel run
        (:class:`dlfd.distributed.ShardSampler` over the same seeded order on every rank;
        ``batch_size`` is then the per-process batch). Rank 0 draws its augmentation like the
        unsharded loader, the other ranks from seeds of their own; with world size 1 the loader is
        the unsharded one, batch for batch."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if shard is not None and sampler is not None:
            raise ConfigError("give a loader either a sampler or a shard, not both")
        dataset = self.dataset(split)
        generator = transform = None
        if not train:
            transform, drop_last = BatchTransform(self.spec), False
            if shard is not None:
                sampler = ShardSampler(SequentialSampler(dataset), *shard, drop_tail=False)
        else:
            generator = torch_generator(seed)
            augment_seed = seed + 1
            if shard is not None:
                rank, world_size = shard
                # exactly the sampler ``shuffle=True`` builds, drawn from the loader's generator
                sampler = ShardSampler(
                    RandomSampler(dataset, generator=generator), rank, world_size, drop_tail=True
                )
                if rank > 0:
                    augment_seed = derive_seed(seed + 1, "rank", rank)
            size = len(dataset) if sampler is None else len(sampler)  # type: ignore[arg-type]
            if drop_last is None:
                drop_last = size % batch_size == 1 and size > 1
            transform = BatchTransform(self.spec, self.augment, torch_generator(augment_seed))
            if sampler is not None and shard is None:
                generator = None
        on_device = self.device is not None
        assert transform is not None
        if self.workers:  # decoded here once; forked workers share the cache instead of filling
            self.cache.preload(dataset.indices)  # copies of their own on every pass
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=drop_last,
            generator=generator,
            num_workers=self.workers,
            pin_memory=on_device and self.device.type == "cuda",
            collate_fn=stack if on_device else functools.partial(collate, transform),
        )
        return OnDeviceLoader(loader, transform, self.device) if on_device else loader
