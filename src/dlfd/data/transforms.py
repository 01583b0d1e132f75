"""Image transforms without torchvision, applied identically everywhere.

Images are decoded once to uint8 tensors at the model's input size (:mod:`dlfd.data.images`).
A :class:`BatchTransform` turns a batch of them into the model's input: to float in [0, 1],
optional random augmentation (flip, small crop, small affine) drawn from an explicit
generator, then per-channel normalisation. Training, evaluation and unlearning all go through
the same :class:`InputSpec`, so pixel bounds and normalisation never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dlfd.errors import ConfigError

#: Largest accepted input side: beyond it a sidecar or option is a mistake, not a model.
MAX_INPUT_SIZE = 4096


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: ``size`` = (height, width), channels and normalisation.

    ``grayscale=True`` turns colour photos into luminance first (then replicated to the
    channels), as DLFD does for RAF-DB.
    """

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    grayscale: bool = False

    def __post_init__(self) -> None:
        try:
            size = tuple(int(s) for s in self.size)
        except OverflowError:  # int(inf)
            size = ()
        if len(size) != 2 or min(size) < 8 or max(size) > MAX_INPUT_SIZE:
            raise ConfigError(
                f"input size must be (height, width) of 8 to {MAX_INPUT_SIZE} pixels, "
                f"got {self.size}"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != self.channels or len(std) != self.channels:
            raise ConfigError(f"mean/std need {self.channels} values, got {mean} / {std}")
        if not all(math.isfinite(m) for m in mean):
            raise ConfigError(f"mean must be finite, got {mean}")
        if any(s <= 0 or not math.isfinite(s) for s in std):
            raise ConfigError(f"std must be positive, got {std}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoint sidecars)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on malformed input."""
        try:
            return cls(
                size=tuple(data["size"]),
                channels=int(data["channels"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
                grayscale=bool(data.get("grayscale", False)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"malformed input spec {data!r}: {exc}") from None

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> model input."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model input -> pixels in [0, 1] (for projection onto valid images, and display)."""
        mean, std = self._stats(inputs)
        return inputs * std + mean

    def input_bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) of valid images in normalised space, shaped (C, 1, 1)."""
        mean, std = self._stats(like)
        return (0 - mean) / std, (1 - mean) / std


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training batches; all zero/None disables a part.

    ``crop_padding``: pixels of reflect padding before a random crop back to size;
    ``degrees``/``translate``/``scale``: a small random affine (rotation in degrees,
    translation as a fraction of the size, isotropic scale range).
    """

    hflip: float = 0.5
    crop_padding: int = 0
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError(f"hflip probability must be in [0, 1], got {self.hflip}")
        numbers = (self.hflip, self.degrees, self.translate, *self.scale)
        if not all(math.isfinite(float(v)) for v in numbers):
            raise ConfigError(f"augmentation values must be finite numbers, got {self}")
        if self.crop_padding < 0 or self.degrees < 0 or not 0 <= self.translate < 0.5:
            raise ConfigError(f"invalid augmentation {self}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"scale range must satisfy 0 < low <= high, got {self.scale}")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return images.to(torch.float32).div_(255.0)


def random_hflip(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a (N, C, H, W) batch left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], generator=generator) < p
    if not flip.any():
        return images
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``padding`` and crop each image back to its size at a random offset."""
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    crops = [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    return torch.stack(crops)


def random_affine(
    images: torch.Tensor,
    degrees: float,
    translate: float,
    scale: Sequence[float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Apply a random rotation/translation/scale to each image (bilinear, border padding)."""
    if degrees == 0 and translate == 0 and tuple(scale) == (1.0, 1.0):
        return images
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * translate)
    lo, hi = float(scale[0]), float(scale[1])
    factor = lo + torch.rand(n, generator=generator) * (hi - lo)
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchTransform:
    """uint8 batch -> normalised model input, with optional seeded augmentation."""

    def __init__(
        self,
        spec: InputSpec,
        augment: AugmentConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if augment is not None and generator is None:
            raise ConfigError("augmentation needs an explicit torch.Generator for reproducibility")
        if augment is not None and augment.crop_padding >= min(spec.size):
            raise ConfigError(
                f"augment.crop_padding={augment.crop_padding} must be smaller than "
                f"the image size {spec.size[0]}x{spec.size[1]}"
            )
        self.spec = spec
        self.augment = augment
        self.generator = generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_float(images)
        aug, gen = self.augment, self.generator
        if aug is not None and gen is not None:
            pixels = random_hflip(pixels, aug.hflip, gen)
            pixels = random_crop(pixels, aug.crop_padding, gen)
            pixels = random_affine(pixels, aug.degrees, aug.translate, aug.scale, gen)
        return self.spec.normalize(pixels)
