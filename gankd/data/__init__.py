"""Data sets by name: embedded real images (no download ever) and user folders.

    train = gankd.data.build("digits", split="train")            # (image [1, 32, 32] in [-1, 1], label)
    pairs = gankd.data.build("photos_sr", split="test", scale=4)  # (low_res [3, 16, 16], high_res [3, 64, 64])
    faces = gankd.data.build("image_folder", root="faces/", load_size=72, crop_size=64)

Every image tensor is float32 [C, H, W] in [-1, 1]. Randomness comes from (seed, epoch, index) per item, so
results repeat given the seed, also with DataLoader workers; call `set_epoch` for new augmentation each
epoch. "digits" needs scikit-learn, "photos_sr" and "photos_color" scikit-image: `pip install 'gankd[data]'`.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from gankd.data.base import SPLITS, SeededDataset
from gankd.data.digits import DigitsDataset
from gankd.data.folders import ImageFolderDataset, PairedFolderDataset
from gankd.data.photos import PhotoColorization, PhotoSuperResolution
from gankd.options import check_choice
from gankd.registry import Registry

_DATASETS = Registry("dataset")
_DATASETS.add("digits", DigitsDataset)
_DATASETS.add("photos_sr", PhotoSuperResolution)
_DATASETS.add("photos_color", PhotoColorization)
_DATASETS.add("image_folder", ImageFolderDataset)
_DATASETS.add("paired_folder", PairedFolderDataset)


def build(name: str, split: str = "train", **options: Any) -> Dataset:
    """Build the data set registered under `name` for `split` ("train" or "test") with `options`.

    Unknown names raise ValueError listing `names()`; unknown options raise TypeError listing the valid ones.
    """
    _DATASETS.get(name)
    check_choice("split", split, SPLITS)
    return _DATASETS.build(name, split, **options)


def names() -> list[str]:
    """The registered data set names, sorted."""
    return _DATASETS.names()


def path_options(name: str) -> tuple[str, ...]:
    """The options of data set `name` that name files or folders (its class's `path_options`); () for a name
    not registered, or a constructor that does not say."""
    return tuple(getattr(_DATASETS.get(name), "path_options", ())) if name in _DATASETS else ()


def register(name: str):
    """Decorator that adds a data set class under `name`, from any module. Its constructor takes the split
    ("train" or "test") first, then keyword options: `@gankd.data.register("my_pairs")`."""
    return _DATASETS.register(name)


__all__ = [
    "DigitsDataset",
    "ImageFolderDataset",
    "PairedFolderDataset",
    "PhotoSuperResolution",
    "SeededDataset",
    "build",
    "names",
    "path_options",
    "register",
]
