"""What every gankd data set shares: the split, a seed, an epoch, and per-item random streams.

Randomness (crops, flips) is drawn from a generator seeded by (seed, epoch, index) for each item, never
from global state: the same item comes out the same in the main process and in any DataLoader worker, and
a run repeats exactly given its seed. Call `set_epoch(epoch)` before each epoch for fresh augmentation.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
from torch.utils.data import Dataset

from gankd.options import check_choice, check_int

SPLITS = ("train", "test")


class SeededDataset(Dataset):
    """Base of the gankd data sets: holds `split`, `seed` and `epoch` and gives each item its own generator.
    `path_options` names the options that are files or folders: a run records them as absolute paths."""

    path_options: tuple[str, ...] = ()

    def __init__(self, split: str, seed: int):
        self.split = check_choice("split", split, SPLITS)
        self.seed = check_int("seed", seed, minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation of this epoch (DataLoader workers copy the data set when an epoch starts)."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def item_rng(self, index: int) -> np.random.Generator:
        """The random generator of item `index` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])


def import_extra(module: str, dataset: str) -> ModuleType:
    """Import an optional dependency of an embedded data set, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the {dataset!r} data set needs {module.split('.')[0]}, an optional dependency of gankd: "
            "pip install 'gankd[data]'"
        ) from error
