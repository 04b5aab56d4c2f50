"""Data sets: embedded sets (splits deterministic and disjoint), user folders from generated PNGs, workers,
and a clear error for each bad input."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

import gankd.data as data
from gankd.data.photos import EXTRA_PHOTOS, GRAY_PHOTOS, SKLEARN_PHOTOS, TEST_PHOTOS, TRAIN_PHOTOS, load_photo


def random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (channels, height, width), generator=torch.Generator().manual_seed(seed)).byte()


def save(image: torch.Tensor, path) -> torch.Tensor:
    """Write uint8 [C, H, W] to `path` (format from the suffix; JPEG is lossy) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy()).save(path)
    return image


def unit(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 127.5 - 1


def test_names():
    assert data.names() == ["digits", "image_folder", "paired_folder", "photos_color", "photos_sr"]


# ---------------------------------------------------------------- digits


def test_digits_splits_are_fixed_disjoint_and_cover_every_scan():
    from sklearn.datasets import load_digits

    train, test = data.build("digits", "train"), data.build("digits", split="test")
    assert (len(train), len(test)) == (1438, 359)
    assert not set(train.indices) & set(test.indices)
    assert sorted([*train.indices, *test.indices]) == list(range(1797))
    assert np.array_equal(data.build("digits", "test").indices, test.indices)  # the same split every time
    assert torch.bincount(test.labels).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]  # stratified

    image, label = train[5]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)
    assert train.images.min() == -1 and 0.9 < train.images.max() <= 1
    scan = torch.from_numpy(load_digits().images[train.indices[5]]).float()
    assert label == load_digits().target[train.indices[5]]
    shrunk = F.avg_pool2d(image, 4).flatten()  # back to 8×8: the same scan, blurred a little by resizing
    assert torch.corrcoef(torch.stack([shrunk, scan.flatten()]))[0, 1] > 0.95
    rgb = data.build("digits", "test", image_size=16, channels=3)
    assert rgb[0][0].shape == (3, 16, 16) and torch.equal(rgb[0][0][0], rgb[0][0][2])


# ---------------------------------------------------------------- photos_sr


def test_no_photograph_is_in_both_splits():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    train_photos = [load_photo(name) for name in TRAIN_PHOTOS]
    for name in TEST_PHOTOS:  # compare pixels too: skimage's cat() is chelsea() under another name
        photo = load_photo(name)
        assert not any(photo.shape == other.shape and torch.equal(photo, other) for other in train_photos), name


def test_photo_pairs_are_downscaled_crops_and_repeat_given_the_seed():
    train = data.build("photos_sr", "train", scale=4, crop_size=32, length=6, seed=3)
    low_res, high_res = train[2]
    assert low_res.shape == (3, 8, 8) and high_res.shape == (3, 32, 32)
    assert high_res.abs().max() <= 1 and low_res.abs().max() <= 1
    expected = F.interpolate(high_res[None], size=(8, 8), mode="bicubic", antialias=True)[0].clamp(-1, 1)
    assert torch.allclose(low_res, expected)
    # high_res is a crop of one of the training photographs, pixel for pixel (or its mirror image).
    number, top, left, flipped = train.crop_position(2)
    crop = train.photos[number][:, top : top + 32, left : left + 32]
    assert torch.equal(high_res, unit(crop.flip(-1) if flipped else crop))
    flips = [train.crop_position(index)[3] for index in range(6)]
    assert any(flips) and not all(flips)

    again = data.build("photos_sr", "train", scale=4, crop_size=32, length=6, seed=3)
    assert all(torch.equal(train[i][1], again[i][1]) for i in range(6))
    other_seed = data.build("photos_sr", "train", scale=4, crop_size=32, length=6, seed=4)
    assert not all(torch.equal(train[i][1], other_seed[i][1]) for i in range(6))
    again.set_epoch(1)
    assert not all(torch.equal(train[i][1], again[i][1]) for i in range(6))

    test = data.build("photos_sr", "test", scale=2, crop_size=100)
    rocket = load_photo("rocket")
    assert len(test) == 3 * 4 + 4 * 6  # chelsea 300×451 and rocket 427×640 in 100×100 tiles
    assert torch.equal(test[3 * 4][1], unit(rocket[:, :100, :100])) and test[0][0].shape == (3, 50, 50)


def test_rotate_and_gray_photos_widen_the_training_crops():
    plain = data.build("photos_sr", "train", crop_size=32, length=40, seed=5)
    rotated = data.build("photos_sr", "train", crop_size=32, length=40, seed=5, rotate=True)
    placements = [rotated.crop_placement(index) for index in range(40)]
    # The same photographs, positions and horizontal flips as without `rotate`; then the extra symmetries.
    assert [placement[:4] for placement in placements] == [plain.crop_position(index) for index in range(40)]
    assert {placement[4:] for placement in placements} == {(False, False), (False, True), (True, False), (True, True)}
    index = next(i for i, placement in enumerate(placements) if placement[4:] == (True, True))
    number, top, left, flipped = plain.crop_position(index)
    crop = rotated.photos[number][:, top : top + 32, left : left + 32]
    crop = crop.flip(-1) if flipped else crop
    assert torch.equal(rotated[index][1], unit(crop.flip(-2).transpose(-1, -2)))

    gray = data.build("photos_sr", "train", crop_size=32, length=4, gray=True)
    assert gray.photo_names == TRAIN_PHOTOS + GRAY_PHOTOS and not set(GRAY_PHOTOS) & set(TEST_PHOTOS)
    camera = gray.photos[gray.photo_names.index("camera")]
    assert camera.shape[0] == 3 and torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])
    assert data.build("photos_sr", "test", gray=True).photo_names == TEST_PHOTOS  # the test tiles never change


def test_extra_photos_add_scikit_learns_photographs_and_never_a_test_one():
    extra = data.build("photos_sr", "train", crop_size=32, length=4, gray=True, extra_photos=["china", "camera"])
    assert extra.photo_names == TRAIN_PHOTOS + GRAY_PHOTOS + ("china",)  # gray's photographs once each
    china = extra.photos[extra.photo_names.index("china")]
    assert china.shape == (3, 427, 640) and china.dtype == torch.uint8 and not torch.equal(china[0], china[1])
    assert set(SKLEARN_PHOTOS) <= set(EXTRA_PHOTOS) and not set(EXTRA_PHOTOS) & {*TEST_PHOTOS, "cat"}
    assert data.build("photos_sr", "test", extra_photos=["flower"]).photo_names == TEST_PHOTOS
    for names, message in [
        (["rocket"], "extra_photos: 'rocket' is a test photograph"),
        (["cat"], "extra_photos: 'cat' is a test photograph"),
        (["lena"], "extra_photos: 'lena' is unknown; choose from camera, "),
        ("china", "extra_photos must be a list of photograph names, got 'china'"),
        (["china", "china"], "extra_photos names a photograph twice"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            data.build("photos_sr", "train", extra_photos=names)


def test_colourisation_pairs_are_the_luma_and_the_colour_crop():
    train = data.build("photos_color", "train", crop_size=32, length=6, seed=3)
    gray, colour = train[2]
    assert gray.shape == (1, 32, 32) and colour.shape == (3, 32, 32)
    assert torch.equal(colour, data.build("photos_sr", "train", crop_size=32, length=6, seed=3)[2][1])
    pixels = (colour + 1) / 2  # luma of the [0, 1] image, mapped back to [-1, 1]
    luma = 0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2]
    torch.testing.assert_close(gray[0], luma * 2 - 1, rtol=0, atol=1e-6)
    assert len(data.build("photos_color", "test", crop_size=100)) == 3 * 4 + 4 * 6


def test_dataloader_workers_give_the_same_batches_as_the_main_process(tmp_path):
    for index in range(6):
        save(random_image(20, 24, seed=index), tmp_path / f"{index}.png")
    for dataset in (
        data.build("photos_sr", length=8, crop_size=16, seed=1),
        data.build("image_folder", root=tmp_path, crop_size=16, seed=1),
    ):
        in_workers = list(DataLoader(dataset, batch_size=4, num_workers=2))
        in_main = list(DataLoader(dataset, batch_size=4, num_workers=0))
        assert len(in_workers) == 2
        for batch_workers, batch_main in zip(in_workers, in_main, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(batch_workers, batch_main, strict=True))


# ---------------------------------------------------------------- image folders


def test_image_folder_with_class_sub_folders(tmp_path):
    cats = [save(random_image(12, 10, seed=i), tmp_path / "cat" / f"{i}.png") for i in range(2)]
    dog = save(random_image(12, 10, seed=9), tmp_path / "dog" / "deeper" / "x.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset = data.build("image_folder", "test", root=tmp_path)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 3
    assert [label for _, label in dataset] == [0, 0, 1]
    assert torch.equal(dataset[1][0], unit(cats[1])) and torch.equal(dataset[2][0], unit(dog))
    gray = data.build("image_folder", "test", root=tmp_path, channels=1)
    assert gray[0][0].shape == (1, 12, 10)


def test_flat_image_folder_resize_crop_flip(tmp_path):
    image = save(random_image(20, 40), tmp_path / "wide.png")
    save(random_image(20, 40, seed=1), tmp_path / "photo.jpg")
    flat = data.build("image_folder", "test", root=tmp_path)
    assert flat.classes == [] and [label for _, label in flat] == [-1, -1]
    assert torch.equal(flat[1][0], unit(image))  # sorted: photo.jpg, wide.png

    resized = data.build("image_folder", "test", root=tmp_path, load_size=10)
    assert resized[0][0].shape == (3, 10, 20)  # the shorter side becomes load_size
    centre = data.build("image_folder", "test", root=tmp_path, crop_size=8, flip=True)
    assert torch.equal(centre[1][0], unit(image[:, 6:14, 16:24]))  # test split: centre crop, no flip

    train = data.build("image_folder", "train", root=tmp_path, crop_size=8, seed=5)
    flips = 0
    for epoch in range(8):
        train.set_epoch(epoch)
        crop = ((train[1][0] + 1) * 127.5).round().byte()
        windows = image.unfold(1, 8, 1).unfold(2, 8, 1).permute(1, 2, 0, 3, 4).flatten(0, 1)
        straight = (windows == crop).flatten(1).all(1).any()
        mirrored = (windows == crop.flip(-1)).flatten(1).all(1).any()
        assert straight or mirrored
        flips += int(bool(mirrored and not straight))
    assert 0 < flips < 8


def test_split_sub_folders_are_used_when_present(tmp_path):
    save(random_image(8, 8, seed=1), tmp_path / "train" / "a.png")
    save(random_image(8, 8, seed=2), tmp_path / "train" / "b.png")
    assert len(data.build("image_folder", "train", root=tmp_path)) == 2
    with pytest.raises(FileNotFoundError, match="'test' split folder"):
        data.build("image_folder", "test", root=tmp_path)


# ---------------------------------------------------------------- paired folders


def test_paired_folders_match_names_and_share_crops_and_flips(tmp_path):
    for index in range(3):
        image = save(random_image(16, 16, seed=index), tmp_path / "A" / f"{index}.png")
        save(255 - image, tmp_path / "B" / f"{index}.png")  # target = the negative of the input
    pairs = data.build("paired_folder", "train", root=tmp_path, crop_size=8, seed=2)
    assert len(pairs) == 3
    for epoch in range(4):
        pairs.set_epoch(epoch)
        for source, target in pairs:
            assert source.shape == (3, 8, 8) and torch.allclose(target, -source, atol=1e-6)
    exact = data.build("paired_folder", "test", root=tmp_path, direction="BtoA")
    assert torch.equal(exact[2][1], unit(random_image(16, 16, seed=2)))
    assert torch.equal(exact[2][0], unit(255 - random_image(16, 16, seed=2)))


def test_side_by_side_ab_images(tmp_path):
    image = save(random_image(10, 24), tmp_path / "pair.png")
    source, target = data.build("paired_folder", "test", root=tmp_path)[0]
    assert torch.equal(source, unit(image[:, :, :12])) and torch.equal(target, unit(image[:, :, 12:]))


# ---------------------------------------------------------------- bad input


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.build("image_folder", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no images"):
        data.build("image_folder", root=tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"no images \(.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff\) in "):
        data.build("image_folder", root=tmp_path)
    with pytest.raises(ValueError, match="no A/ and B/ folders and no side-by-side"):
        data.build("paired_folder", root=tmp_path)
    (tmp_path / "A").mkdir()
    with pytest.raises(FileNotFoundError, match="folder B"):
        data.build("paired_folder", root=tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="class folder .*A has no images"):
        data.build("image_folder", root=tmp_path)


def test_unreadable_and_mismatched_images(tmp_path):
    # Every file is checked when the data set is built, from its header: sizes, unreadable and truncated files.
    save(random_image(8, 8), tmp_path / "flat" / "a.png")
    save(random_image(8, 12), tmp_path / "flat" / "b.png")
    with pytest.raises(ValueError, match=r"b.png comes out \(8, 12\) but .*a.png \(8, 8\) \(height, width\): pass"):
        data.build("image_folder", "test", root=tmp_path / "flat")
    assert data.build("image_folder", "test", root=tmp_path / "flat", load_size=8, crop_size=8).image_shape == (3, 8, 8)
    (tmp_path / "flat" / "b.png").unlink()
    (tmp_path / "flat" / "c.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="cannot read image .*c.png"):
        data.build("image_folder", "test", root=tmp_path / "flat")
    save(random_image(32, 32), tmp_path / "flat" / "c.png")
    (tmp_path / "flat" / "c.png").write_bytes((tmp_path / "flat" / "c.png").read_bytes()[:-40])  # truncated
    with pytest.raises(ValueError, match="cannot read image .*c.png"):
        data.build("image_folder", "test", root=tmp_path / "flat")
    # A file that changes after the data set was built is still caught when it is read.
    save(random_image(8, 8), tmp_path / "flat" / "c.png")
    dataset = data.build("image_folder", "test", root=tmp_path / "flat")
    assert dataset.verify_seconds > 0
    save(random_image(8, 12), tmp_path / "flat" / "c.png")
    with pytest.raises(ValueError, match=r"c.png comes out \(3, 8, 12\) but the data set's images \(3, 8, 8\)"):
        dataset[1]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot read image .*a.jpg"):
        data.build("image_folder", root=tmp_path / "broken")
    with pytest.raises(ValueError, match="smaller than crop_size=9: pass a smaller crop_size, or load_size=9 to"):
        data.build("image_folder", root=tmp_path / "flat", crop_size=9)

    save(random_image(8, 8), tmp_path / "pairs" / "A" / "x.png")
    save(random_image(8, 6), tmp_path / "pairs" / "B" / "x.png")
    with pytest.raises(ValueError, match=r"mismatched pair: .*A/x.png is \(8, 8\) but .*B/x.png is \(8, 6\)"):
        data.build("paired_folder", root=tmp_path / "pairs")
    save(random_image(9, 9), tmp_path / "odd" / "ab.png")
    with pytest.raises(ValueError, match="odd width 9"):
        data.build("paired_folder", root=tmp_path / "odd")
    save(random_image(4, 4), tmp_path / "mixed" / "top.png")
    save(random_image(4, 4), tmp_path / "mixed" / "cls" / "a.png")
    with pytest.raises(ValueError, match="both images .* and sub-folders"):
        data.build("image_folder", root=tmp_path / "mixed")


def test_unpaired_and_duplicate_names(tmp_path):
    for name in ("x", "y", "z"):
        save(random_image(4, 4), tmp_path / "A" / f"{name}.png")
    for name in ("x", "w"):
        save(random_image(4, 4), tmp_path / "B" / f"{name}.png")
    with pytest.raises(ValueError, match=r"unpaired names: 2 in .*A only \(y, z\), 1 in .*B only \(w\)"):
        data.build("paired_folder", root=tmp_path)
    save(random_image(4, 4), tmp_path / "A" / "x.jpg")
    with pytest.raises(ValueError, match="two images named 'x'"):
        data.build("paired_folder", root=tmp_path)


def test_unknown_names_and_wrong_options(tmp_path):
    save(random_image(8, 8), tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid names: digits, image_folder, paired"):
        data.build("mnist")
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'; got 'val'"):
        data.build("digits", "val")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'crop'.*valid options: .*crop_size"):
        data.build("image_folder", root=tmp_path, crop=8)
    with pytest.raises(TypeError, match="root must be a str or Path, got int"):
        data.build("image_folder", root=3)
    with pytest.raises(TypeError, match="crop_size must be an int, got str"):
        data.build("image_folder", root=tmp_path, crop_size="8")
    with pytest.raises(TypeError, match="flip must be a bool"):
        data.build("paired_folder", root=tmp_path, flip="yes")
    with pytest.raises(ValueError, match="channels must be one of 1, 3; got 2"):
        data.build("image_folder", root=tmp_path, channels=2)
    with pytest.raises(ValueError, match="direction must be one of"):
        data.build("paired_folder", root=tmp_path, direction="AB")
    with pytest.raises(ValueError, match="crop_size must be a multiple of scale=4"):
        data.build("photos_sr", crop_size=30)
    with pytest.raises(ValueError, match=r"crop_size must be at most 300 \(the smallest test photograph\)"):
        data.build("photos_sr", "test", crop_size=320)
    with pytest.raises(TypeError, match="length must be an int"):
        data.build("photos_sr", "test", length="10")
    with pytest.raises(TypeError, match="seed must be an int"):
        data.build("digits", seed=1.5)


def test_embedded_sets_say_how_to_install_their_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"'digits' data set needs sklearn.*pip install 'gankd\[data\]'"):
        data.build("digits")
    with pytest.raises(ImportError, match=r"'photos_sr' data set needs skimage.*pip install 'gankd\[data\]'"):
        data.build("photos_sr", "test")


def test_importing_gankd_needs_neither_extra():
    code = (
        "import sys\n"
        "for name in ('sklearn', 'skimage'): sys.modules[name] = None\n"
        "import gankd, gankd.models, gankd.data, gankd.cli\n"
        "print(sorted(gankd.data.names()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "photos_sr" in result.stdout


def test_sizes_read_from_headers_are_the_sizes_images_come_out_at(tmp_path):
    for height, width, load_size, crop_size in [(7, 13, 5, None), (13, 7, 5, None), (30, 17, 11, 9), (9, 9, 4, 4),
                                                (10, 31, None, 6), (12, 5, 3, None)]:  # fmt: skip
        folder = tmp_path / f"{height}x{width}_{load_size}_{crop_size}"
        save(random_image(height, width), folder / "a.png")
        dataset = data.build("image_folder", "train", root=folder, load_size=load_size, crop_size=crop_size)
        assert dataset.image_shape == tuple(dataset[0][0].shape), (height, width, load_size, crop_size)


# ---------------------------------------------------------------- what users' folders hold


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    # Pillow's own conversion of 16-bit grayscale (mode I;16) to 8 bits clips everything above 255 to white.
    ramp = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = data.build("image_folder", "test", root=tmp_path, channels=1)[0][0]
    assert torch.equal(image, unit(torch.tensor([[[0, 64, 128, 255]]], dtype=torch.uint8)))


def test_photographs_come_out_upright_as_their_exif_tag_says(tmp_path):
    # A camera stores the pixels sideways (height 4, width 6) and tags them "rotate 90° clockwise to show".
    stored = random_image(4, 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored.permute(1, 2, 0).numpy()).save(tmp_path / "phone.png", exif=exif)
    folder = data.build("image_folder", "test", root=tmp_path)
    assert folder.image_shape == (3, 6, 4)
    assert torch.equal(folder[0][0], unit(torch.rot90(stored, -1, dims=(1, 2))))


def test_tiffs_are_read_and_other_files_are_counted_in_the_summary(tmp_path):
    save(random_image(8, 8), tmp_path / "a.tif")
    save(random_image(8, 8, seed=1), tmp_path / "b.PNG")
    Image.fromarray(random_image(8, 8).permute(1, 2, 0).numpy()).save(tmp_path / "anim.gif")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_text("x")
    folder = data.build("image_folder", "test", root=tmp_path)
    assert len(folder) == 2
    assert folder.check_summary.endswith("skipped 2 files that are not .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff "
                                         "(.gif: 1, .txt: 1)")  # fmt: skip


def test_cyclegan_and_pix2pix_data_set_layouts(tmp_path):
    for name in ("trainA", "trainB", "testA", "testB"):
        save(random_image(8, 8), tmp_path / "horse2zebra" / name / "x.png")
    with pytest.raises(ValueError, match=r"looks like a CycleGAN data set .* root=.*horse2zebra/testA"):
        data.build("image_folder", root=tmp_path / "horse2zebra")
    assert len(data.build("image_folder", root=tmp_path / "horse2zebra" / "trainA")) == 1
    # pix2pix's maps, cityscapes and edges2shoes ship train/ and val/: val/ is the test split.
    save(random_image(8, 16), tmp_path / "maps" / "train" / "1.jpg")
    save(random_image(8, 16), tmp_path / "maps" / "val" / "2.jpg")
    assert data.build("paired_folder", "test", root=tmp_path / "maps").folder == tmp_path / "maps" / "val"
    save(random_image(8, 15), tmp_path / "odd" / "1.png")
    with pytest.raises(ValueError, match="odd width 15: .* crop or pad it to an even width"):
        data.build("paired_folder", root=tmp_path / "odd")
