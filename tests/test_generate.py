"""gankd generate: a run's samples, outputs for a folder of inputs, and its reference images, as image folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankd import data
from gankd.cli import main
from gankd.train import load_trained_model

SMALL = ["--set", "steps=2", "--set", "checkpoint_every=2", "--set", "eval.num_samples=32"]


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.png"))


@pytest.fixture(autouse=True)
def _proxy(monkeypatch, proxy_cache):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory, proxy_cache):
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANKD_CACHE", str(proxy_cache.parent))
        main(["train", "digits_dcgan_teacher", "--set", f"output_dir={root}", "--set", "model.options.ngf=4",
              "--set", "gan.discriminator.options.ndf=4", "--set", "data.batch_size=8", *SMALL])  # fmt: skip
    return root / "digits_dcgan_teacher"


def test_a_conditional_generator_writes_its_samples_per_class(dcgan_run, tmp_path, capsys):
    main(["generate", "--checkpoint", str(dcgan_run), "--count", "25", "--out", str(tmp_path / "a")])
    assert capsys.readouterr().out.strip() == f"wrote 25 images to {tmp_path / 'a'}"
    counts = [len(_files(tmp_path / "a" / str(label))) for label in range(10)]
    assert counts == [3] * 5 + [2] * 5  # labels cycle through the classes
    model = load_trained_model(dcgan_run)[0]
    first = np.asarray(Image.open(tmp_path / "a" / "3" / "000003.png"))
    with torch.no_grad():
        expected = model(torch.randn(25, model.nz, generator=torch.Generator().manual_seed(0))[3:4], torch.tensor([3]))
    assert first.shape == (32, 32)  # grayscale, the generator's size
    assert np.abs(first / 127.5 - 1 - expected[0, 0].numpy()).max() <= 0.5 / 127.5 + 1e-6
    main(["generate", "--checkpoint", str(dcgan_run), "--count", "25", "--out", str(tmp_path / "b")])
    main(["generate", "--checkpoint", str(dcgan_run), "--count", "25", "--seed", "1", "--out", str(tmp_path / "c")])
    first = _files(tmp_path / "a")
    same = [a.read_bytes() == b.read_bytes() for a, b in zip(first, _files(tmp_path / "b"), strict=True)]
    other = [a.read_bytes() == b.read_bytes() for a, b in zip(first, _files(tmp_path / "c"), strict=True)]
    assert all(same) and not any(other)
    with pytest.raises(SystemExit, match=r"gankd generate: error: out: .*/a already exists and is not an empty folder"):
        main(["generate", "--checkpoint", str(dcgan_run), "--count", "5", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="inputs: the run's model generates from noise, not from input images"):
        main(["generate", "--checkpoint", str(dcgan_run), "--inputs", str(tmp_path), "--out", str(tmp_path / "d")])
    with pytest.raises(SystemExit, match="count must be a positive number of samples to draw, got None"):
        main(["generate", "--checkpoint", str(dcgan_run), "--out", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()  # nothing is created for a call that is refused


def test_reference_images_read_back_as_the_runs_data_and_eval_compares_the_folders(dcgan_run, tmp_path, capsys):
    main(["generate", "--checkpoint", str(dcgan_run), "--reference", "--out", str(tmp_path / "real")])
    main(["generate", "--checkpoint", str(dcgan_run), "--count", "100", "--out", str(tmp_path / "samples")])
    written = data.build("image_folder", "test", root=tmp_path / "real", channels=1, flip=False)
    source = data.build("digits", "test")
    assert len(written) == len(source) and written.classes == [str(label) for label in range(10)]
    by_label = {label: sorted(float(source[i][0].sum()) for i in range(len(source)) if source[i][1] == label)
                for label in range(10)}  # fmt: skip
    read = {label: sorted(float(written[i][0].sum()) for i in range(len(written)) if written[i][1] == label)
            for label in range(10)}  # fmt: skip
    for label in range(10):  # each class holds that class's images (up to 8-bit rounding)
        assert np.allclose(read[label], by_label[label], atol=32 * 32 * 0.5 / 127.5)
    capsys.readouterr()
    main(["eval", "--generated", str(tmp_path / "samples"), "--reference", str(tmp_path / "real"),
          "--metrics", "fd_digits"])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["metrics"]["fd_digits"] > 0


def test_an_image_to_image_run_translates_a_folder_keeping_its_layout(tmp_path, capsys):
    main(["train", "photos_resnet_teacher", "--set", f"output_dir={tmp_path}", "--set", "model.options.ngf=4",
          "--set", "model.options.n_blocks=1", "--set", "data.batch_size=2", *SMALL])  # fmt: skip
    run = tmp_path / "photos_resnet_teacher"
    rng = np.random.default_rng(0)
    for name in ("x/a.png", "y/z/b.jpg"):  # an image_folder: flat, or in sub-folders
        (tmp_path / "inputs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "inputs" / name)
    main(["generate", "--checkpoint", str(run), "--inputs", str(tmp_path / "inputs"), "--out", str(tmp_path / "out")])
    assert [path.relative_to(tmp_path / "out").as_posix() for path in _files(tmp_path / "out")] == [
        "x/a.png", "y/z/b.png"]  # fmt: skip
    model = load_trained_model(run)[0]
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "inputs" / "x" / "a.png"))).permute(2, 0, 1).float()
    with torch.no_grad():
        expected = model((image / 127.5 - 1)[None])[0].clamp(-1, 1)
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "out" / "x" / "a.png"))).permute(2, 0, 1).float()
    assert written.shape == (3, 48, 40)  # 4x super-resolution
    assert (written / 127.5 - 1 - expected).abs().max() <= 0.5 / 127.5 + 1e-6
    with pytest.raises(SystemExit, match="maps images to images: give a folder of input images"):
        main(["generate", "--checkpoint", str(run), "--out", str(tmp_path / "none")])
    # pix2pix-style pairs: each pair's input side is translated (A of side-by-side AB images, in the run's AtoB).
    pair = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    (tmp_path / "pairs").mkdir()
    Image.fromarray(pair).save(tmp_path / "pairs" / "p.png")
    main(["generate", "--checkpoint", str(run), "--inputs", str(tmp_path / "pairs"), "--paired",
          "--out", str(tmp_path / "translated")])  # fmt: skip
    with torch.no_grad():
        expected = model((torch.from_numpy(pair[:, :10]).permute(2, 0, 1).float() / 127.5 - 1)[None])[0].clamp(-1, 1)
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "translated" / "p.png"))).permute(2, 0, 1).float()
    assert written.shape == (3, 48, 40) and (written / 127.5 - 1 - expected).abs().max() <= 0.5 / 127.5 + 1e-6
    with pytest.raises(SystemExit, match="paired: it says how to read --inputs"):
        main(["generate", "--checkpoint", str(run), "--paired", "--out", str(tmp_path / "none")])
    # Two inputs that would write one file are refused before anything is written.
    (tmp_path / "clash").mkdir()
    for suffix in (".png", ".bmp"):
        Image.fromarray(pair[:, :10]).save(tmp_path / "clash" / f"x{suffix}")
    with pytest.raises(SystemExit, match=r"inputs: .*x.bmp and .*x.png would both be written as x.png: rename one"):
        main(["generate", "--checkpoint", str(run), "--inputs", str(tmp_path / "clash"), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_a_classifier_run_has_no_images_to_generate(tmp_path):
    main(["train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path}", "--set", "model.options.width=4",
          "--set", "data.batch_size=16", "--set", "steps=2", "--set", "checkpoint_every=2"])  # fmt: skip
    with pytest.raises(SystemExit, match="a 'classifier' run's model outputs no images"):
        main(["generate", "--checkpoint", str(tmp_path / "digits_cnn_teacher"), "--count", "4",
              "--out", str(tmp_path / "out")])  # fmt: skip
