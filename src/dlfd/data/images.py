"""Decoding image files into fixed-size uint8 tensors, once per file (the loaders cache them;
random augmentation happens later, on batches: :mod:`dlfd.data.transforms`).

Hashing (:func:`image_hashes`) and loading (:func:`load_image`) apply the same rules, so the split
checks and the models see the same pictures:

* Size: at most :data:`MAX_IMAGE_PIXELS` pixels, checked from the header before decoding; a
  larger file is a DataError naming it and its size (never only a DecompressionBombWarning).
* Pixel modes: 8-bit modes (``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGB``, ``RGBA``, ``CMYK``,
  ``YCbCr``...) are converted by Pillow (alpha dropped, stored colour kept, as torchvision's
  loader does; palettes looked up; modes Pillow converts to RGB only, such as ``LAB``, go
  through RGB). 16-bit grayscale (``I;16``, ``I;16B``..., and the ``I`` images Pillow makes of
  16-bit PNG and PGM/PPM files) is scaled 0..65535 -> 0..255 (divided by 257, rounded). Other
  32-bit integer (``I``) and float (``F``) images have no defined pixel range: a DataError
  naming the file and the mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dlfd.data.transforms import InputSpec
from dlfd.errors import DataError

T = TypeVar("T")

#: Largest image accepted, in pixels (width x height): 64 megapixels (an 8000x8000 photo).
#: Checked from the header right after opening, before decoding.
MAX_IMAGE_PIXELS = 64_000_000
# Pillow's own guard agrees (it warns above this and refuses above twice this; we refuse above).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

#: Formats whose ``I`` images hold 16-bit samples (0..65535): Pillow opens 16-bit PGM/PPM (and,
#: in some versions, 16-bit PNG) files as mode ``I``.
_SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})
#: JPEGs are hashed from a reduced-size decode (never below this size): the same file always
#: gives the same pixels, and hashing 1024x1024 CelebA-HQ photos gets ~10x faster.
HASH_DECODE_SIZE = 256


def _read(path: Path, draft: tuple[int, int], decode: Callable[[Image.Image], T]) -> T:
    """Open ``path``, refuse it if it has more than :data:`MAX_IMAGE_PIXELS` pixels (from the
    header, before decoding), load it (a JPEG at a reduced scale, never below ``draft``: much
    faster) and ``decode`` it; every failure is a DataError naming it."""
    limit = f"the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels"
    try:
        with warnings.catch_warnings():
            # Pillow only warns up to twice its limit: the check below refuses instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"image {path} is {width}x{height} pixels "
                        f"({width * height / 1e6:.1f} megapixels), more than {limit}"
                    )
                if img.format == "JPEG":
                    img.draft(img.mode, draft)
                img.load()
                return decode(img)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses
        raise DataError(f"image {path} is larger than {limit} ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def _eight_bit(img: Image.Image, path: Path) -> Image.Image:
    """``img`` (loaded) with 8-bit samples: 16-bit grayscale scaled 0..65535 -> 0..255, other
    8-bit modes unchanged; 32-bit integer and float images are refused (ambiguous range)."""
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and img.format in _SIXTEEN_BIT_I_FORMATS):
        wide = np.asarray(img, dtype=np.float64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise DataError(
                f"image {path} has 16-bit pixel mode {mode!r} but values outside 0..65535"
            )
        return Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        kind = "floating-point" if mode.startswith("F") else "32-bit integer"
        raise DataError(
            f"image {path} has {kind} pixel mode {mode!r}, whose value range is ambiguous; "
            f"save it as 8-bit or 16-bit grayscale or RGB"
        )
    return img


def _convert(img: Image.Image, mode: str, path: Path) -> Image.Image:
    """``img`` (8-bit) in ``mode`` ("L" or "RGB"), through RGB for modes Pillow converts to
    RGB only (LAB)."""
    if img.mode == mode:
        return img
    with contextlib.suppress(ValueError):
        return img.convert(mode)
    try:
        return img.convert("RGB").convert(mode)
    except ValueError:
        raise DataError(
            f"image {path} has pixel mode {img.mode!r}, which cannot be converted to {mode}"
        ) from None


def difference_hash(img: Image.Image) -> int:
    """64-bit perceptual difference hash (dHash): grayscale 9x8, one bit per horizontal
    brightness step. Resizing or re-encoding a photo changes few bits; another photo ~half.

    Taken from the 8-bit luminance :func:`load_image` would compute (16-bit images scaled,
    ambiguous modes refused with a DataError)."""
    path = Path(getattr(img, "filename", "") or "<image>")
    gray = _convert(_eight_bit(img, path), "L", path)
    small = np.asarray(gray.resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def image_hashes(path: str | Path) -> tuple[str, int]:
    """(sha256 of the decoded pixels, perceptual dHash) of one image, decoded once. The pixel hash
    covers mode, size and values, whatever the file format: the same picture saved as PNG and as PGM
    gets the same hash ("identical image content" in the split checks). The dHash is taken from the
    8-bit pixels :func:`load_image` would use; files it refuses (too large, ambiguous pixel modes)
    are refused here too."""

    def decode(img: Image.Image) -> tuple[str, int]:
        perceptual = difference_hash(img)  # refuses what load_image refuses
        header = f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode()
        return hashlib.sha256(header + img.tobytes()).hexdigest(), perceptual

    return _read(Path(path), (HASH_DECODE_SIZE, HASH_DECODE_SIZE), decode)


def load_image(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """Read ``path`` as a ``(channels, H, W)`` uint8 tensor at ``spec.size``. Grayscale files are
    replicated to 3 channels when the model wants RGB; colour files are converted to luminance when
    it wants 1 channel (see the module docstring for pixel modes and the size limit). Any unreadable
    or refused file raises :class:`DataError` naming it."""
    path = Path(path)
    height, width = spec.size

    def decode(img: Image.Image) -> np.ndarray:
        eight = _eight_bit(img, path)
        gray = eight.mode in ("1", "L", "LA", "La") or spec.grayscale or spec.channels == 1
        eight = _convert(eight, "L" if gray else "RGB", path)
        if eight.size != (width, height):
            eight = eight.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(eight, dtype=np.uint8)

    tensor = torch.from_numpy(_read(path, (width, height), decode).copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.shape[0] == 1 and spec.channels == 3:
        tensor = tensor.expand(3, -1, -1).contiguous()
    return tensor
