"""`digits`: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, 10 classes), no download."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gankd.data.base import SeededDataset, import_extra
from gankd.options import check_choice, check_int

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so that every experiment judges on the same held-out scans


def digits_split_indices(split: str) -> np.ndarray:
    """Rows of `sklearn.datasets.load_digits()` in `split`: a stratified split, 20% of each class held out.

    Uses NumPy's legacy RandomState (its stream is frozen across NumPy versions) seeded with `SPLIT_SEED`.
    """
    targets = import_extra("sklearn.datasets", "digits").load_digits().target
    rng = np.random.RandomState(SPLIT_SEED)
    test_rows = []
    for label in range(10):
        rows = np.flatnonzero(targets == label)
        test_rows.append(rng.permutation(rows)[: round(len(rows) * TEST_FRACTION)])
    test = np.sort(np.concatenate(test_rows))
    return test if split == "test" else np.setdiff1d(np.arange(len(targets)), test)


class DigitsDataset(SeededDataset):
    """Handwritten digits as `(image, label)`: image float32 [channels, image_size, image_size] in [-1, 1]
    (ink is +1, paper -1), label 0–9.

    The 8×8 scans (values 0–16) are scaled to [-1, 1] and resized bilinearly to `image_size` (default 32,
    the size of the DCGAN and CIFAR models). `channels=3` repeats the gray channel for RGB models. The
    train/test split is fixed (see `digits_split_indices`): 1,438 train and 359 test scans, no scan in
    both. Needs scikit-learn (`pip install 'gankd[data]'`). `seed` is accepted for a uniform interface; the
    set has no randomness.
    """

    # Generation metrics that need no downloaded weights and judge this data set: gankd's digits proxies.
    proxy_metrics = ("fd_digits", "kid_digits")

    def __init__(self, split: str = "train", *, image_size: int = 32, channels: int = 1, seed: int = 0):
        super().__init__(split, seed)
        self.image_size = check_int("image_size", image_size, minimum=8)
        self.channels = check_choice("channels", channels, (1, 3))
        digits = import_extra("sklearn.datasets", "digits").load_digits()
        self.indices = digits_split_indices(split)
        scans = torch.from_numpy(digits.images[self.indices]).float()[:, None] / 16 * 2 - 1
        images = F.interpolate(scans, size=(image_size, image_size), mode="bilinear", align_corners=False)
        self.images = images.clamp(-1, 1).expand(-1, channels, -1, -1).contiguous()
        self.labels = torch.from_numpy(digits.target[self.indices]).long()
        self.classes = [str(label) for label in range(10)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])
