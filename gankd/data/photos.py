"""Image-to-image pairs cut from the photographs scikit-image bundles: `photos_sr`, 4× (or 2×, 8×)
super-resolution, and `photos_color`, colourisation (grayscale in, colour out).

Training items are random crops of six colour photographs (for super-resolution, with `gray=True`, also of
seven grayscale ones, and with `extra_photos` of the ones named); test items tile two other photographs, so no
photograph appears in both splits. Nothing is downloaded: these files ship inside scikit-image and
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gankd.data.base import SeededDataset, import_extra
from gankd.data.images import to_unit_range
from gankd.options import check_bool, check_int, check_power_of_two

# ITU-R BT.601 luma weights of R, G, B: the grayscale a colourisation model starts from.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# skimage.data loaders of real RGB photographs (cat() is chelsea() again, so only one of them is used).
TRAIN_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
TEST_PHOTOS = ("chelsea", "rocket")
# Grayscale photographs (as three equal channels) that `gray=True` adds to training: skimage bundles no other
# RGB photographs that load offline, and these bring the smooth areas (sky, walls) and textures the colour set lacks.
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "clock")


# The two colour photographs scikit-learn bundles (`sklearn.datasets.load_sample_image`), both 427 x 640.
SKLEARN_PHOTOS = ("china", "flower")
# Every photograph a super-resolution model may add to its training ones (`extra_photos`): the test ones never.
EXTRA_PHOTOS = GRAY_PHOTOS + SKLEARN_PHOTOS + ("page", "text")


def load_photo(name: str) -> Tensor:
    """A bundled photograph as uint8 [3, H, W]: one of SKLEARN_PHOTOS, or a scikit-image one (the left view of
    `stereo_motorcycle`; a grayscale one repeated on three channels)."""
    if name in SKLEARN_PHOTOS:
        photo = import_extra("sklearn.datasets", "photos_sr").load_sample_image(f"{name}.jpg")
    else:
        photo = getattr(import_extra("skimage.data", "photos_sr"), name)()
    if isinstance(photo, tuple):
        photo = photo[0]
    if photo.ndim == 2:
        photo = photo[:, :, None].repeat(3, axis=2)
    # One copy, into [3, H, W]: it is also writable (some bundled arrays are read-only).
    return torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1)))


class PhotoCrops(SeededDataset):
    """Square crops of scikit-image photographs, float32 [3, crop_size, crop_size] in [-1, 1] (`crop(index)`);
    subclasses make items of them.

    Training: `length` items per epoch, each from a photograph drawn uniformly, at a uniform position,
    flipped horizontally with probability 1/2 when `flip`, and with `rotate` also flipped vertically and
    transposed, each with probability 1/2 (with `flip`: the 8 symmetries of the square), all drawn from
    (seed, epoch, index). `extra_photos` adds photographs to the training ones. Test: every non-overlapping
    `crop_size` tile of the test photographs, in order. Needs scikit-image (`pip install 'gankd[data]'`).
    """

    def __init__(self, split: str, *, crop_size: int, length: int, flip: bool, rotate: bool, seed: int,
                 extra_photos: tuple[str, ...] = ()):  # fmt: skip
        super().__init__(split, seed)
        self.crop_size = check_int("crop_size", crop_size, minimum=1)
        self.flip = check_bool("flip", flip)
        self.rotate = check_bool("rotate", rotate)
        self.length = check_int("length", length, minimum=1)
        self.photo_names = TEST_PHOTOS if split == "test" else TRAIN_PHOTOS + extra_photos
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
        return self.crop_placement(index)[:4]

    def crop_placement(self, index: int) -> tuple[int, int, int, bool, bool, bool]:
        """Item `index`'s crop_position and then (flipped vertically, transposed), which only `rotate` sets."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.split == "test":
            return (*self.tiles[index], False, False, False)
        rng = self.item_rng(index)
        number = int(rng.integers(len(self.photos)))
        height, width = self.photos[number].shape[1:]
        top = int(rng.integers(height - self.crop_size + 1))
        left = int(rng.integers(width - self.crop_size + 1))
        flip = self.flip and bool(rng.random() < 0.5)
        # Drawn after the position and the flip, so `rotate` leaves the crops of a seed where they were.
        flip_vertically, transpose = (bool(draw < 0.5) for draw in rng.random(2)) if self.rotate else (False, False)
        return number, top, left, flip, flip_vertically, transpose

    def crop(self, index: int) -> Tensor:
        """Item `index`'s crop, flipped and transposed as `crop_placement` says, in [-1, 1]."""
        number, top, left, flip, flip_vertically, transpose = self.crop_placement(index)
        crop = self.photos[number][:, top : top + self.crop_size, left : left + self.crop_size]
        crop = torch.flip(crop, dims=[dim for dim, done in ((-1, flip), (-2, flip_vertically)) if done])
        return to_unit_range(crop.transpose(-1, -2).contiguous() if transpose else crop)


class PhotoSuperResolution(PhotoCrops):
    """Super-resolution pairs `(low_res, high_res)`: float32 [3, crop_size/scale, crop_size/scale] and
    [3, crop_size, crop_size], both in [-1, 1].

    `high_res` is a crop (see PhotoCrops: `crop_size`, `length`, `flip`, `rotate`, `seed`); `low_res` is it
    shrunk `scale` times (bicubic, antialiased, clamped to [-1, 1]). `gray` adds GRAY_PHOTOS to the training
    photographs and `extra_photos` any of EXTRA_PHOTOS (scikit-learn's "china" and "flower" among them).
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
        gray: bool = False,
        rotate: bool = False,
        extra_photos: Sequence[str] = (),
    ):
        self.scale = check_power_of_two("scale", scale, minimum=2, maximum=16)
        check_int("crop_size", crop_size, minimum=scale)
        if crop_size % scale:
            raise ValueError(f"crop_size must be a multiple of scale={scale}, got {crop_size}")
        self.gray = check_bool("gray", gray)
        extra = _check_extra_photos(extra_photos)
        extra = (*GRAY_PHOTOS, *(name for name in extra if name not in GRAY_PHOTOS)) if self.gray else extra
        super().__init__(split, crop_size=crop_size, length=length, flip=flip, rotate=rotate, seed=seed,
                         extra_photos=extra)  # fmt: skip

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        high_res = self.crop(index)
        low_size = self.crop_size // self.scale
        low_res = F.interpolate(high_res[None], size=(low_size, low_size), mode="bicubic", antialias=True)[0]
        return low_res.clamp(-1, 1), high_res


def _check_extra_photos(names) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"extra_photos must be a list of photograph names, got {names!r}")
    for name in names:
        if name not in EXTRA_PHOTOS:
            hint = "a test photograph; training never sees those" if name in (*TEST_PHOTOS, "cat") else "unknown"
            raise ValueError(f"extra_photos: {name!r} is {hint}; choose from {', '.join(EXTRA_PHOTOS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"extra_photos names a photograph twice: {list(names)}")
    return tuple(names)


class PhotoColorization(PhotoCrops):
    """Colourisation pairs `(gray, colour)`: float32 [1, crop_size, crop_size] and [3, crop_size, crop_size],
    both in [-1, 1]; `gray` is the BT.601 luma of `colour`, a crop of a colour photograph (see PhotoCrops).
    The pix2pix-style image-to-image task of gankd's embedded data.
    """

    def __init__(self, split: str = "train", *, crop_size: int = 64, length: int = 1000, flip: bool = True,
                 rotate: bool = False, seed: int = 0):  # fmt: skip
        super().__init__(split, crop_size=crop_size, length=length, flip=flip, rotate=rotate, seed=seed)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        colour = self.crop(index)
        weights = torch.tensor(LUMA_WEIGHTS, dtype=colour.dtype).view(3, 1, 1)
        return (colour * weights).sum(dim=0, keepdim=True), colour
