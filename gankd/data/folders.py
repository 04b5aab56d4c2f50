"""User data on disk: an image folder (class sub-folders or flat) and paired folders (A/ + B/, or AB images).

Both look in `root/<split>` when `root` has a `train/` or `test/` sub-folder (the test split falls back to
`val/`, as pix2pix's maps, cityscapes and edges2shoes ship), and in `root` itself otherwise. Images are any of
IMAGE_SUFFIXES; they come out as float32 [channels, H, W] in [-1, 1], upright (EXIF orientation applied).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from torch import Tensor

from gankd.data.base import SPLITS, SeededDataset
from gankd.data.images import (
    IMAGE_SUFFIXES,
    ImagePipeline,
    check_folder,
    image_files,
    image_size,
    other_files,
    read_image,
)
from gankd.options import check_choice


def split_folder(root: str | Path, split: str) -> Path:
    """`root/<split>` when `root` is divided into split folders, else `root`; errors name what is missing."""
    root = check_folder(root, "root")
    if any((root / name).is_dir() for name in SPLITS):
        if split != "test":
            return check_folder(root / split, f"the {split!r} split folder")
        if not (root / "test").is_dir() and (root / "val").is_dir():
            return root / "val"
        return check_folder(root / "test", f"the 'test' split folder (also looked for {root / 'val'})")
    return root


# How to make every image come out one size, from a run's config, `gankd eval` or `gankd generate`.
ONE_SIZE_HINT = (
    "pass load_size and/or crop_size so that all images come out the same size (--set data.options.crop_size=256 "
    "in a run, --data-set crop_size=256 for gankd eval, --inputs-set crop_size=256 for gankd generate)"
)


class _FolderDataset(SeededDataset):
    """Shared by the folder data sets: the pipeline, the check of every file when the data set is built, and
    the rule that every item comes out one size.

    Subclasses list their files, then call `_verify()`; `_header_size(index)` gives an item's size from its
    files' headers and `_load(index)` its images, each with the file that names the item in errors."""

    path_options = ("root",)

    def __init__(self, root, split, channels, load_size, crop_size, flip, seed):
        super().__init__(split, seed)
        self.folder = split_folder(root, split)
        self.channels = check_choice("channels", channels, (1, 3))
        self.pipeline = ImagePipeline(split, load_size, crop_size, flip)
        self.image_shape: tuple[int, ...] = ()
        self.verify_seconds = 0.0
        self.skipped = other_files(self.folder, recursive=True)

    def _header_size(self, index: int) -> tuple[tuple[int, int], Path]:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[list[Tensor], Path]:
        raise NotImplementedError

    def _verify(self) -> None:
        """Every file opens and its header decodes, and every item comes out one size (items are batched
        together): checked now, from the headers (no pixels decoded), so that a bad file stops a run before
        it starts rather than steps into it. How long it took is `verify_seconds`."""
        started = time.perf_counter()
        first: tuple[tuple[int, int], Path] | None = None
        for index in range(len(self)):
            (height, width), path = self._header_size(index)
            size = self.pipeline.output_size(height, width, path)
            if first is None:
                first = size, path
            elif size != first[0]:
                raise ValueError(
                    f"image {path} comes out {size} but {first[1]} {first[0]} (height, width): {ONE_SIZE_HINT}"
                )
        self.image_shape = (self.channels, *first[0])
        self.verify_seconds = time.perf_counter() - started

    @property
    def check_summary(self) -> str:
        """What `_verify` checked and how long it took, and the files that are not images, for the run's log."""
        summary = f"checked the {len(self)} items of {self.folder} in {self.verify_seconds:.2f} s"
        if self.skipped:
            counts = ", ".join(f"{suffix or 'no suffix'}: {count}" for suffix, count in sorted(self.skipped.items()))
            summary += f"; skipped {self.skipped.total()} files that are not {'/'.join(IMAGE_SUFFIXES)} ({counts})"
        return summary

    def _checked(self, index: int) -> list[Tensor]:
        images, path = self._load(index)
        if tuple(images[0].shape) != self.image_shape:  # a file changed since the data set was built
            raise ValueError(
                f"image {path} comes out {tuple(images[0].shape)} but the data set's images {self.image_shape}: "
                f"{ONE_SIZE_HINT}"
            )
        return images


class ImageFolderDataset(_FolderDataset):
    """Images in a folder: `(image, label)` items.

    With class sub-folders (`root/cat/1.png`, `root/dog/x/2.jpg`, searched recursively) the label is the
    index of the sub-folder in `classes` (sorted names); with images directly in the folder (flat) the
    label is -1 and `classes` is empty. Options: `channels` 3 (RGB) or 1 (grayscale); `load_size`,
    `crop_size`, `flip` as in `gankd.data.images.ImagePipeline`; `seed` for the crops and flips.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | Path,
        channels: int = 3,
        load_size: int | None = None,
        crop_size: int | None = None,
        flip: bool = True,
        seed: int = 0,
    ):
        super().__init__(root, split, channels, load_size, crop_size, flip, seed)
        class_folders = sorted(
            path for path in self.folder.iterdir() if path.is_dir() and not path.name.startswith(".")
        )
        flat_images = image_files(self.folder)
        if class_folders and flat_images:
            raise ValueError(
                f"{self.folder} holds both images ({flat_images[0].name}, ...) and sub-folders "
                f"({class_folders[0].name}, ...): use either class sub-folders or a flat folder of images"
            )
        _refuse_cyclegan_root(self.folder, class_folders)
        self.classes = [path.name for path in class_folders]
        self.samples: list[tuple[Path, int]] = [(path, -1) for path in flat_images]
        for label, class_folder in enumerate(class_folders):
            files = image_files(class_folder, recursive=True)
            if not files:
                raise ValueError(f"class folder {class_folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
            self.samples += [(path, label) for path in files]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self._verify()

    def __len__(self) -> int:
        return len(self.samples)

    def _header_size(self, index: int) -> tuple[tuple[int, int], Path]:
        path = self.samples[index][0]
        return image_size(path), path

    def _load(self, index: int) -> tuple[list[Tensor], Path]:
        path = self.samples[index][0]
        return self.pipeline([read_image(path, self.channels)], self.item_rng(index), [path]), path

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self._checked(index)[0], self.samples[index][1]


class PairedFolderDataset(_FolderDataset):
    """Aligned image pairs: `(input, target)` items for image-to-image translation.

    Two layouts: `root/A/` and `root/B/` holding files with matching names (the file name without its
    suffix must match, so `A/x.png` pairs with `B/x.jpg`), or pix2pix-style images with A on the left half
    and B on the right half of each file. `direction="AtoB"` makes A the input and B the target, "BtoA" the
    reverse. A and B of a pair must have the same size; both get the same resize, crop and flip. Other
    options as in `ImageFolderDataset`.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | Path,
        direction: str = "AtoB",
        channels: int = 3,
        load_size: int | None = None,
        crop_size: int | None = None,
        flip: bool = True,
        seed: int = 0,
    ):
        super().__init__(root, split, channels, load_size, crop_size, flip, seed)
        self.direction = check_choice("direction", direction, ("AtoB", "BtoA"))
        folder_a, folder_b = self.folder / "A", self.folder / "B"
        self.side_by_side = not (folder_a.is_dir() or folder_b.is_dir())
        if self.side_by_side:
            self.pairs = [(path, path) for path in image_files(self.folder)]
            if not self.pairs:
                raise ValueError(
                    f"no A/ and B/ folders and no side-by-side AB images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}"
                )
        else:
            self.pairs = _pair_by_name(check_folder(folder_a, "folder A"), check_folder(folder_b, "folder B"))
        self._verify()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_a, image_b = self._checked(index)
        return (image_a, image_b) if self.direction == "AtoB" else (image_b, image_a)

    def _header_size(self, index: int) -> tuple[tuple[int, int], Path]:
        path_a, path_b = self.pairs[index]
        height, width = image_size(path_a)
        if self.side_by_side:
            _check_even(width, path_a)
            return (height, width // 2), path_a
        if image_size(path_b) != (height, width):
            raise ValueError(_mismatched_pair(path_a, (height, width), path_b, image_size(path_b)))
        return (height, width), path_a

    def _load(self, index: int) -> tuple[list[Tensor], Path]:
        path_a, path_b = self.pairs[index]
        if self.side_by_side:
            image_a, image_b = _split_side_by_side(read_image(path_a, self.channels), path_a)
        else:
            image_a, image_b = read_image(path_a, self.channels), read_image(path_b, self.channels)
            if image_a.shape != image_b.shape:
                raise ValueError(_mismatched_pair(path_a, tuple(image_a.shape[1:]), path_b, tuple(image_b.shape[1:])))
        return self.pipeline([image_a, image_b], self.item_rng(index), [path_a, path_b]), path_a


def _pair_by_name(folder_a: Path, folder_b: Path) -> list[tuple[Path, Path]]:
    files = {}
    for folder in (folder_a, folder_b):
        by_stem: dict[str, Path] = {}
        for path in image_files(folder):
            if path.stem in by_stem:
                raise ValueError(f"two images named {path.stem!r} in {folder}: {by_stem[path.stem].name}, {path.name}")
            by_stem[path.stem] = path
        if not by_stem:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        files[folder] = by_stem
    only_a = sorted(files[folder_a].keys() - files[folder_b].keys())
    only_b = sorted(files[folder_b].keys() - files[folder_a].keys())
    if only_a or only_b:
        raise ValueError(
            f"unpaired names: {len(only_a)} in {folder_a} only ({', '.join(only_a[:5])}), "
            f"{len(only_b)} in {folder_b} only ({', '.join(only_b[:5])})"
        )
    return [(files[folder_a][stem], files[folder_b][stem]) for stem in sorted(files[folder_a])]


def _refuse_cyclegan_root(folder: Path, class_folders: list[Path]) -> None:
    # CycleGAN data sets hold trainA/ trainB/ testA/ testB/: as classes they would mix both domains and the tests.
    names = [path.name for path in class_folders]
    if names and all(re.fullmatch(r"(train|test|val)[AB]", name) for name in names):
        raise ValueError(
            f"root {folder} looks like a CycleGAN data set ({', '.join(names)}), not class folders: pass the source "
            f"domain's folder, e.g. root={folder / names[0]}"
        )


def _mismatched_pair(path_a: Path, size_a: tuple, path_b: Path, size_b: tuple) -> str:
    return (
        f"mismatched pair: {path_a} is {size_a} but {path_b} is {size_b} (height, width); A and B must have "
        "the same size"
    )


def _check_even(width: int, path: Path) -> None:
    if width % 2:
        raise ValueError(
            f"side-by-side AB image {path} has an odd width {width}: it cannot be halved into A and B of one size; "
            "crop or pad it to an even width"
        )


def _split_side_by_side(image: Tensor, path: Path) -> tuple[Tensor, Tensor]:
    width = image.shape[-1]
    _check_even(width, path)
    return image[..., : width // 2], image[..., width // 2 :]
