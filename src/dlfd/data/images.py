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


def pixel_hash(path: str | Path) -> str:
    """sha256 of a file's decoded pixels (mode, size and values), whatever its file format.

    The same picture saved as PNG and as PGM, or with different metadata, gets the same hash;
    this is what "identical image content" means in the split checks.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            header = f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode()
            return hashlib.sha256(header + img.tobytes()).hexdigest()
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
            img.load()
            if img.mode.startswith("I;16"):
                # 16-bit grayscale: rescale to 8 bits instead of letting convert() clip at 255.
                wide = np.asarray(img, dtype=np.float32) / 257.0
                img = Image.fromarray(np.clip(wide.round(), 0, 255).astype(np.uint8), mode="L")
            gray = img.mode in ("1", "L", "LA", "I", "F")
            mode = "L" if (gray or spec.channels == 1) else "RGB"
            img = img.convert(mode)
            height, width = spec.size
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
