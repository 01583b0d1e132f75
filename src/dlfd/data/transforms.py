"""Image transforms without torchvision, applied identically everywhere.

A :class:`BatchTransform` turns a batch of uint8 images (decoded once at the model's input size,
:mod:`dlfd.data.images`) into model input: float in [0, 1], optional random augmentation (flip,
small crop, small affine) from an explicit generator, per-channel normalisation. Training,
evaluation and unlearning share one :class:`InputSpec`: bounds and normalisation never disagree.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dlfd.config import check_bounds, setting
from dlfd.errors import ConfigError

#: Input sides accepted (pixels): beyond them a sidecar or option is a mistake, not a model
#: (a 4096x4096 input would need gigabytes per batch before anything could say so).
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 1024
#: Normalisation statistics accepted, for pixels in [0, 1]: a std below ``MIN_STD`` (or a mean
#: far outside the pixel range) turns valid images into inputs of astronomic magnitude.
MAX_ABS_MEAN = 100.0
MIN_STD, MAX_STD = 1e-3, 100.0


def _integer(value: object) -> int | None:
    """``value`` as an int if it is an integral number (not a bool), else None."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return int(value) if integral or (isinstance(value, float) and value.is_integer()) else None


def _floats(values: object) -> tuple[float, ...] | None:
    """``values`` as a tuple of floats if it is a sequence of real numbers, else None."""
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):  # numpy/torch
        values = values.tolist()
    if not _is_sequence(values) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        return None
    return tuple(float(v) for v in values)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: ``size`` = (height, width), channels and normalisation.
    ``grayscale=True`` turns colour photos into luminance first (then replicated to the channels),
    as DLFD does for RAF-DB. Bounds (a :class:`ConfigError` otherwise; checkpoint sidecars get a
    CheckpointError): each side an integer in [8, 1024]; ``channels`` 1 or 3; one mean and one std
    per channel, finite, |mean| <= 100 and std in [0.001, 100] (pixels are in [0, 1])."""

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    grayscale: bool = False

    def __post_init__(self) -> None:
        raw = self.size
        sides = [_integer(s) for s in raw] if _is_sequence(raw) else []
        if len(sides) != 2 or not all(MIN_INPUT_SIZE <= (s or 0) <= MAX_INPUT_SIZE for s in sides):
            raise ConfigError(
                f"input size must be (height, width) of {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} "
                f"pixels each, got {raw!r}"
            )
        size = (sides[0], sides[1])
        channels = _integer(self.channels)
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        mean, std = _floats(self.mean), _floats(self.std)
        if mean is None or std is None:
            raise ConfigError(
                f"mean/std must be lists of numbers, got {self.mean!r} / {self.std!r}"
            )
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"mean/std need {channels} values, got {mean} / {std}")
        if not all(math.isfinite(m) and abs(m) <= MAX_ABS_MEAN for m in mean):
            raise ConfigError(f"mean must be finite numbers in [-100, 100], got {mean}")
        if not all(MIN_STD <= s <= MAX_STD for s in std):  # False for NaN
            raise ConfigError(f"std must be positive, in [{MIN_STD:g}, {MAX_STD:g}], got {std}")
        if not isinstance(self.grayscale, bool):
            raise ConfigError(f"grayscale must be true or false, got {self.grayscale!r}")
        for name, value in {"size": size, "channels": channels, "mean": mean, "std": std}.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoint sidecars)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on malformed input."""
        if not isinstance(data, dict):
            raise ConfigError(f"malformed input spec {data!r}: not a mapping")
        fields = ("size", "channels", "mean", "std")
        missing = [key for key in fields if key not in data]
        if missing:
            raise ConfigError(f"malformed input spec {data!r}: missing {', '.join(missing)}")
        try:
            return cls(**{key: data[key] for key in fields}, grayscale=data.get("grayscale", False))
        except ConfigError as exc:
            raise ConfigError(f"malformed input spec: {exc}") from None

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
    """Random augmentation of training batches (ranges checked on construction); all zero/None
    disables a part. ``hflip``: flip probability; ``crop_padding``: pixels of reflect padding
    before a random crop back to size (below the image size); ``degrees``/``translate``/``scale``:
    a small random affine (rotation in degrees, translation as a fraction of the size, isotropic
    scale range, low <= high)."""

    hflip: float = setting(0.5, "[0, 1]")
    crop_padding: int = setting(0, "[0, 512]")
    degrees: float = setting(0.0, "[0, 180]")
    translate: float = setting(0.0, "[0, 0.5)")
    scale: tuple[float, float] = setting((1.0, 1.0), "[0.1, 10]")

    def __post_init__(self) -> None:
        if not isinstance(self.scale, (tuple, list)) or len(self.scale) != 2:
            raise ConfigError(f"scale must be a (low, high) pair, got {self.scale!r}")
        check_bounds(self)
        lo, hi = self.scale
        if not lo <= hi:
            raise ConfigError(f"scale range must satisfy low <= high, got {self.scale}")


# The random draws below always come from a CPU generator (the same stream whatever the device
# of ``images``); only the pixel operations run where the images are.


def random_hflip(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a (N, C, H, W) batch left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], generator=generator) < p
    if not flip.any():
        return images
    flip = flip.to(images.device)
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
    ).to(images.device, images.dtype)
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
        self.spec, self.augment, self.generator = spec, augment, generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.to(torch.float32).div_(255.0)
        aug, gen = self.augment, self.generator
        if aug is not None and gen is not None:
            pixels = random_hflip(pixels, aug.hflip, gen)
            pixels = random_crop(pixels, aug.crop_padding, gen)
            pixels = random_affine(pixels, aug.degrees, aug.translate, aug.scale, gen)
        return self.spec.normalize(pixels)
