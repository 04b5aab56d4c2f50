"""`photos_sr`: 4× (or 2×, 8×) super-resolution pairs cut from the photographs scikit-image bundles.

Training items are random crops of six photographs; test items tile two other photographs, so no
photograph appears in both splits. Nothing is downloaded: these files ship inside scikit-image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gankd.data.base import SeededDataset, import_extra
from gankd.data.images import to_unit_range
from gankd.options import check_bool, check_int, check_power_of_two

# skimage.data loaders of real RGB photographs (cat() is chelsea() again, so only one of them is used).
TRAIN_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
TEST_PHOTOS = ("chelsea", "rocket")


def load_photo(name: str) -> Tensor:
    """A scikit-image photograph as uint8 [3, H, W] (the left view of `stereo_motorcycle`)."""
    data = import_extra("skimage.data", "photos_sr")
    photo = getattr(data, name)()
    if isinstance(photo, tuple):
        photo = photo[0]
    return torch.from_numpy(photo).permute(2, 0, 1).contiguous()


class PhotoSuperResolution(SeededDataset):
    """Super-resolution pairs `(low_res, high_res)`: float32 [3, crop_size/scale, crop_size/scale] and
    [3, crop_size, crop_size], both in [-1, 1].

    `high_res` is a `crop_size` square of a photograph; `low_res` is it shrunk `scale` times (bicubic,
    antialiased, clamped to [-1, 1]). Training: `length` items per epoch, each from a photograph drawn
    uniformly, at a uniform position, flipped horizontally with probability 1/2 when `flip` (drawn from
    (seed, epoch, index)). Test: every non-overlapping `crop_size` tile of the test photographs, in order.
    Needs scikit-image (`pip install 'gankd[data]'`).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        scale: int = 4,
        crop_size: int = 64,
        length: int = 1000,
        flip: bool = True,
        seed: int = 0,
    ):
        super().__init__(split, seed)
        self.scale = check_power_of_two("scale", scale, minimum=2, maximum=16)
        self.crop_size = check_int("crop_size", crop_size, minimum=scale)
        if crop_size % scale:
            raise ValueError(f"crop_size must be a multiple of scale={scale}, got {crop_size}")
        self.flip = check_bool("flip", flip)
        self.length = check_int("length", length, minimum=1)
        self.photo_names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        self.photos = [load_photo(name) for name in self.photo_names]
        smallest = min(min(photo.shape[1:]) for photo in self.photos)
        if crop_size > smallest:
            raise ValueError(f"crop_size must be at most {smallest} (the smallest {split} photograph), got {crop_size}")
        if split == "test":
            # (photo, top, left) of each tile; the test split has no randomness.
            self.tiles = [
                (number, top, left)
                for number, photo in enumerate(self.photos)
                for top in range(0, photo.shape[1] - crop_size + 1, crop_size)
                for left in range(0, photo.shape[2] - crop_size + 1, crop_size)
            ]

    def __len__(self) -> int:
        return self.length if self.split == "train" else len(self.tiles)  # `length` is for training only

    def crop_position(self, index: int) -> tuple[int, int, int, bool]:
        """Where item `index` comes from: (photograph number in `photo_names`, top, left, flipped)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.split == "test":
            return (*self.tiles[index], False)
        rng = self.item_rng(index)
        number = int(rng.integers(len(self.photos)))
        height, width = self.photos[number].shape[1:]
        top = int(rng.integers(height - self.crop_size + 1))
        left = int(rng.integers(width - self.crop_size + 1))
        return number, top, left, self.flip and bool(rng.random() < 0.5)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        number, top, left, flip = self.crop_position(index)
        crop = self.photos[number][:, top : top + self.crop_size, left : left + self.crop_size]
        high_res = to_unit_range(torch.flip(crop, dims=[-1]) if flip else crop)
        low_size = self.crop_size // self.scale
        low_res = F.interpolate(high_res[None], size=(low_size, low_size), mode="bicubic", antialias=True)[0]
        return low_res.clamp(-1, 1), high_res
