"""User data on disk: an image folder (class sub-folders or flat) and paired folders (A/ + B/, or AB images).

Both look in `root/<split>` when `root` has a `train/` or `test/` sub-folder, and in `root` itself
otherwise. Images are PNG, JPEG or WebP; they come out as float32 [channels, H, W] in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from gankd.data.base import SPLITS, SeededDataset
from gankd.data.images import IMAGE_SUFFIXES, ImagePipeline, check_folder, image_files, read_image
from gankd.options import check_choice


def split_folder(root: str | Path, split: str) -> Path:
    """`root/<split>` when `root` is divided into split folders, else `root`; errors name what is missing."""
    root = check_folder(root, "root")
    if any((root / name).is_dir() for name in SPLITS):
        return check_folder(root / split, f"the {split!r} split folder")
    return root


class _FolderDataset(SeededDataset):
    """Shared by the folder data sets: the pipeline, and the rule that every item comes out one size.

    Subclasses list their files, then call `_record_image_shape()`; `_load(index)` returns the item's images
    and the file that names them in errors."""

    def __init__(self, root, split, channels, load_size, crop_size, flip, seed):
        super().__init__(split, seed)
        self.folder = split_folder(root, split)
        self.channels = check_choice("channels", channels, (1, 3))
        self.pipeline = ImagePipeline(split, load_size, crop_size, flip)
        self.image_shape: tuple[int, ...] = ()

    def _load(self, index: int) -> tuple[list[Tensor], Path]:
        raise NotImplementedError

    def _record_image_shape(self) -> None:
        # Items are batched together, so every item must come out the size of the first (read here, at once).
        self.image_shape = tuple(self._load(0)[0][0].shape)

    def _checked(self, index: int) -> list[Tensor]:
        images, path = self._load(index)
        if tuple(images[0].shape) != self.image_shape:
            raise ValueError(
                f"image {path} comes out {tuple(images[0].shape)} but the first image {self.image_shape}; "
                "pass load_size and/or crop_size so that all images come out the same size"
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
        self.classes = [path.name for path in class_folders]
        self.samples: list[tuple[Path, int]] = [(path, -1) for path in flat_images]
        for label, class_folder in enumerate(class_folders):
            files = image_files(class_folder, recursive=True)
            if not files:
                raise ValueError(f"class folder {class_folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
            self.samples += [(path, label) for path in files]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self._record_image_shape()

    def __len__(self) -> int:
        return len(self.samples)

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
        self._record_image_shape()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_a, image_b = self._checked(index)
        return (image_a, image_b) if self.direction == "AtoB" else (image_b, image_a)

    def _load(self, index: int) -> tuple[list[Tensor], Path]:
        path_a, path_b = self.pairs[index]
        if self.side_by_side:
            image_a, image_b = _split_side_by_side(read_image(path_a, self.channels), path_a)
        else:
            image_a, image_b = read_image(path_a, self.channels), read_image(path_b, self.channels)
            if image_a.shape != image_b.shape:
                raise ValueError(
                    f"mismatched pair: {path_a} is {tuple(image_a.shape[1:])} but {path_b} is "
                    f"{tuple(image_b.shape[1:])} (height, width); A and B must have the same size"
                )
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


def _split_side_by_side(image: Tensor, path: Path) -> tuple[Tensor, Tensor]:
    width = image.shape[-1]
    if width % 2:
        raise ValueError(f"side-by-side AB image {path} has an odd width {width}: it cannot be halved into A and B")
    return image[..., : width // 2], image[..., width // 2 :]
