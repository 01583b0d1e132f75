"""Decoding image files into fixed-size uint8 tensors.

Decoding and resizing happen once per file (results are cached by the loaders); everything
random (augmentation) happens later on batches, see :mod:`dlfd.data.transforms`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dlfd.data.transforms import InputSpec
from dlfd.errors import DataError

# Refuse decompression bombs loudly instead of PIL's warning.
Image.MAX_IMAGE_PIXELS = 64_000_000


#: JPEGs are hashed from a reduced-size decode (never below this size): the same file always
#: gives the same pixels, and hashing 1024x1024 CelebA-HQ photos gets ~10x faster.
HASH_DECODE_SIZE = 256


def difference_hash(img: Image.Image) -> int:
    """64-bit perceptual difference hash (dHash): grayscale 9x8, one bit per horizontal
    brightness step. Resizing or re-encoding a photo changes few bits; another photo ~half."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def image_hashes(path: str | Path) -> tuple[str, int]:
    """(sha256 of the decoded pixels, perceptual dHash) of one image, decoded once.

    The pixel hash covers mode, size and values, whatever the file format: the same picture
    saved as PNG and as PGM gets the same hash ("identical image content" in the split checks).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (HASH_DECODE_SIZE, HASH_DECODE_SIZE))  # fast reduced decode
            img.load()
            header = f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode()
            return hashlib.sha256(header + img.tobytes()).hexdigest(), difference_hash(img)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def load_image(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """Read ``path`` as a ``(channels, H, W)`` uint8 tensor at ``spec.size``.

    Grayscale files are replicated to 3 channels when the model wants RGB; colour files are
    converted to luminance when it wants 1 channel. Any unreadable file raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            height, width = spec.size
            if img.format == "JPEG":
                # decode large JPEGs at a reduced scale (never below the target size): much faster
                img.draft(img.mode, (width, height))
            img.load()
            if img.mode.startswith("I;16"):
                # 16-bit grayscale: rescale to 8 bits instead of letting convert() clip at 255.
                wide = np.asarray(img, dtype=np.float32) / 257.0
                img = Image.fromarray(np.clip(wide.round(), 0, 255).astype(np.uint8), mode="L")
            gray = img.mode in ("1", "L", "LA", "I", "F") or spec.grayscale
            mode = "L" if (gray or spec.channels == 1) else "RGB"
            img = img.convert(mode)
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.shape[0] == 1 and spec.channels == 3:
        tensor = tensor.expand(3, -1, -1).contiguous()
    return tensor
