"""Image files: finding them, decoding them (Pillow), and the resize / crop / flip pipeline.

Decoding uses Pillow rather than torchvision.io, whose decoders are deprecated since torchvision 0.29.

Images come out as float32 tensors [C, H, W] in [-1, 1] (uint8 0 → -1, 255 → 1), the usual GAN range.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.v2 import functional as transforms

from gankd.options import check_bool, check_choice, check_optional_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PIL_MODES = {1: "L", 3: "RGB"}
# EXIF orientations (tag 0x0112) that swap height and width: cameras store such photographs sideways.
EXIF_ORIENTATION, TRANSPOSED_ORIENTATIONS = 0x0112, (5, 6, 7, 8)


def check_folder(path: str | Path, what: str) -> Path:
    """`path` as a Path if it is an existing folder; TypeError or FileNotFoundError naming `what` otherwise."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{what} must be a str or Path, got {type(path).__name__}")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} is not a folder: {folder}")
    return folder


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files (by suffix, case-insensitive) in `folder`, sorted; hidden files and folders are skipped."""
    return sorted(path for path in _visible_files(folder, recursive) if path.suffix.lower() in IMAGE_SUFFIXES)


def other_files(folder: Path, *, recursive: bool = False) -> Counter[str]:
    """How many visible files in `folder` `image_files` leaves out, by suffix ('' for none)."""
    return Counter(path.suffix.lower() for path in _visible_files(folder, recursive)
                   if path.suffix.lower() not in IMAGE_SUFFIXES)  # fmt: skip


def _visible_files(folder: Path, recursive: bool):
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return (path for path in candidates
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts))  # fmt: skip


def read_image(path: Path, channels: int) -> Tensor:
    """Decode `path` to uint8 [channels, H, W] (RGB or grayscale); ValueError naming the file if it cannot."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)  # as the photograph is shown, not as it is stored
            pixels = np.asarray(_eight_bit(upright).convert(PIL_MODES[channels]))
    except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for unknown or broken files
        raise ValueError(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], channels).permute(2, 0, 1)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, after Pillow's integrity check (PNG chunk checksums, the
    structure of other formats) without decoding the pixels; ValueError naming the file if either fails."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.verify()
        with Image.open(path) as image:  # verify() leaves the image unusable: the EXIF tag is read anew
            if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
                width, height = height, width
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    return height, width


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (Pillow's modes I;16* and I, as 16-bit PNGs and TIFFs open) scaled to 8 bits: Pillow's
    own conversion clips them at 255 instead. Other modes are returned as they are."""
    if not image.mode.startswith("I"):
        return image
    wide = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(wide * (255 / 65535)), 0, 255).astype(np.uint8), mode="L")


def to_unit_range(image: Tensor) -> Tensor:
    """uint8 [C, H, W] → float32 in [-1, 1]."""
    return image.float() / 127.5 - 1


class ImagePipeline:
    """Resize, crop and flip, applied identically to every image of one item (an image, or an A/B pair).

    `load_size`: resize so that the shorter side is `load_size` (aspect kept, antialiased). `crop_size`:
    a square crop, random in the training split and centred in the test split. `flip`: a random horizontal
    flip with probability 1/2, in the training split only. None / False skip a step.
    """

    def __init__(self, split: str, load_size: int | None, crop_size: int | None, flip: bool):
        self.train = check_choice("split", split, ("train", "test")) == "train"
        self.load_size = check_optional_int("load_size", load_size, minimum=1)
        self.crop_size = check_optional_int("crop_size", crop_size, minimum=1)
        self.flip = check_bool("flip", flip)

    def output_size(self, height: int, width: int, name: Path) -> tuple[int, int]:
        """The (height, width) an image of that size comes out at; ValueError naming it if it is too small."""
        if self.load_size is not None:
            short, long = sorted((height, width))
            resized = (self.load_size, int(self.load_size * long / short))  # as torchvision's resize computes it
            height, width = resized if height <= width else resized[::-1]
        if self.crop_size is None:
            return height, width
        if height < self.crop_size or width < self.crop_size:
            raise ValueError(
                f"image {name} is {height}x{width} (after resizing), smaller than crop_size={self.crop_size}: pass a "
                f"smaller crop_size, or load_size={self.crop_size} to enlarge the images first"
            )
        return self.crop_size, self.crop_size

    def __call__(self, images: Sequence[Tensor], rng: np.random.Generator, names: Sequence[Path]) -> list[Tensor]:
        if self.load_size is not None:
            images = [transforms.resize(image, [self.load_size], antialias=True) for image in images]
        if self.crop_size is not None:
            height, width = images[0].shape[-2:]
            self.output_size(height, width, names[0])  # only checks: the image is at least the crop
            if self.train:
                top = int(rng.integers(height - self.crop_size + 1))
                left = int(rng.integers(width - self.crop_size + 1))
            else:
                top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
            images = [image[..., top : top + self.crop_size, left : left + self.crop_size] for image in images]
        if self.train and self.flip and rng.random() < 0.5:
            images = [torch.flip(image, dims=[-1]) for image in images]
        return [to_unit_range(image) for image in images]
