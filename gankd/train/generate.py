"""Write a trained run's outputs as image files: a generator's samples, an image-to-image model's outputs for
a folder of inputs, or the run's own evaluation images (the reference to compare samples with).

The folders it writes are what `gankd eval --generated ... --reference ...` and the `image_folder` data set
read: PNG files, in class sub-folders (`0/`, `1/`, ...) for a conditional generator's samples and for
labelled evaluation images, else flat; outputs for inputs keep the inputs' relative paths (as .png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from gankd import data, tasks
from gankd.metrics import generator_batches

from .builders import build_dataset
from .loop import load_trained_model


def generate(location, out: str | Path, *, count: int | None = None, inputs: str | Path | None = None,
             input_options: dict | None = None, paired: bool = False, reference: bool = False, batch_size: int = 64,
             seed: int = 0, device: str = "cpu") -> dict:  # fmt: skip
    """Write images from the run or checkpoint at `location` into the new (or empty) folder `out`.

    One of: `count` samples of a noise-to-image generator (noise seeded with `seed`; a conditional one's
    labels cycle through its classes); the model's outputs for each image under the folder `inputs` (an
    `image_folder` data set with `input_options`, e.g. load_size, channels; with `paired`, a `paired_folder` of
    A/ + B/ or side-by-side AB images whose input side, in the run's direction, is translated); or with
    `reference` up to `count` images of the run's evaluation split. Returns {"written": number of files,
    "folder": out}.
    """
    out = _check_empty(Path(out))
    model, config, _ = load_trained_model(location)
    model.to(device)
    task = tasks.build(config.task)
    if task.output != "image":
        raise ValueError(f"a {task.name!r} run's model outputs no images: gankd generate writes a generator's or an "
                         "image-to-image model's images")  # fmt: skip
    is_generator = hasattr(model, "nz")
    if paired and inputs is None:
        raise ValueError("paired: it says how to read --inputs; give a folder of input pairs, or leave paired out")
    if inputs is not None and (reference or is_generator):
        what = "reference images come from the run's data" if reference else "the run's model generates from noise"
        raise ValueError(f"inputs: {what}, not from input images: leave inputs out")
    if reference:
        batches = _reference_images(task, build_dataset(config, config.eval.split), count, batch_size)
    elif is_generator:
        if count is None or count < 1:
            raise ValueError(f"count must be a positive number of samples to draw, got {count}")
        batches = generator_batches(model, count, batch_size=batch_size, seed=seed, device=device)
    elif inputs is None:
        raise ValueError(f"inputs: the run's model ({config.model.name}) maps images to images: give a folder "
                         "of input images")  # fmt: skip
    else:
        direction = config.data.options.get("direction", "AtoB") if paired else None
        dataset, names = _input_folder(model, inputs, dict(input_options or {}), direction)
        out.mkdir(parents=True, exist_ok=True)
        return {"written": _write_outputs(model, dataset, names, out, batch_size, device), "folder": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    return {"written": _write_labelled(batches, out), "folder": str(out)}


def _check_empty(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out: {out} already exists and is not an empty folder: choose a new folder, so that "
                              "no earlier images are overwritten or mixed in")  # fmt: skip
    return out


def _reference_images(task, dataset, count: int | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(images, class labels or None) batches of the images the task calls real (a generator's training images,
    an image-to-image model's targets) in the first `count` items (all when None) of `dataset`."""
    total = len(dataset) if count is None else min(count, len(dataset))
    for batch in DataLoader(torch.utils.data.Subset(dataset, range(total)), batch_size=batch_size):
        items = tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)
        images = task.real_images(items)
        if images is None:
            raise ValueError(f"reference: a {task.name!r} run's data have no reference images to write")
        labels = items[1] if len(items) > 1 and isinstance(items[1], Tensor) and items[1].dim() == 1 else None
        class_labels = labels is not None and not labels.is_floating_point() and bool((labels >= 0).all())
        yield images, labels if class_labels else None


def _write_labelled(batches: Iterator[tuple[Tensor, Tensor | None]], out: Path) -> int:
    """Write each image as out/<index>.png, or out/<label>/<index>.png when it has a class label."""
    written = 0
    for images, labels in batches:
        for index, image in enumerate(images):
            folder = out if labels is None else out / str(int(labels[index]))
            folder.mkdir(exist_ok=True)
            _save(image, folder / f"{written:06d}.png")
            written += 1
    return written


def _input_folder(model: nn.Module, inputs, options: dict, direction: str | None) -> tuple[Dataset, list[Path]]:
    """The data set of the input images (not flipped; the model's input channels), each item's input first,
    and the output file of each item: an `image_folder`, or with a `direction` a `paired_folder` read in it.
    ValueError if two inputs would write one output file."""
    options.setdefault("flip", False)
    options.setdefault("channels", getattr(model, "in_channels", 3))  # zoo image-to-image models have it
    if direction is None:
        dataset = data.build("image_folder", "test", root=inputs, **options)
        sources = [path for path, _ in dataset.samples]
    else:
        dataset = data.build("paired_folder", "test", root=inputs, **{"direction": direction, **options})
        sources = [pair[0] if dataset.direction == "AtoB" else pair[1] for pair in dataset.pairs]
    names, seen = [], {}
    for source in sources:
        name = source.relative_to(source.parent if direction and not dataset.side_by_side else dataset.folder)
        name = name.with_suffix(".png")
        if name in seen:
            raise ValueError(f"inputs: {seen[name]} and {source} would both be written as {name}: rename one")
        seen[name] = source
        names.append(name)
    return dataset, names


@torch.no_grad()
def _write_outputs(model: nn.Module, dataset, names: list[Path], out: Path, batch_size: int, device) -> int:
    """The model's output for the input of each item of `dataset`, written under `out` as its name."""
    model.eval()
    written = 0
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        images = torch.stack([dataset[index][0] for index in indices])
        outputs = model(images.to(device)).float().cpu()
        for index, output in zip(indices, outputs, strict=True):
            (out / names[index]).parent.mkdir(parents=True, exist_ok=True)
            _save(output, out / names[index])
            written += 1
    return written


def _save(image: Tensor, path: Path) -> None:
    """[C, H, W] in [-1, 1] as an 8-bit PNG, grayscale for one channel: the inverse of how image folders are read
    (uint8 / 127.5 - 1), so written reference images read back exactly."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
