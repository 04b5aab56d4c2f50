"""`gankd models`: the table lists every model with its real cost, and the README shows the same table."""

import re
from pathlib import Path

import gankd.models as models
from gankd.cli import main

README = Path(__file__).parent.parent / "README.md"


def test_gankd_models_lists_every_model_with_params_and_macs(capsys):
    main(["models"])
    table = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    names = {cells[0].strip() for cells in rows[1:]}
    assert names == set(models.names())
    resnet_g = {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows if cells[0].strip() == "resnet_g"}
    assert resnet_g["teacher"][2:6] == ["ngf=64", "1x3x256x256", "11.378", "49,551.5"]  # CycleGAN's generator
    student_macs = next(r["macs"] for r in models.cost_table() if r["name"] == "resnet_g" and r["role"] == "student")
    assert resnet_g["student"][5] == f"{student_macs / 1e6:,.1f}"
    assert resnet_g["student"][6] == f"{49_551_507_456 / student_macs:.1f}"


def test_the_readme_table_is_the_commands_output(capsys):
    main(["models"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    readme = README.read_text()
    assert "gankd models" in readme
    assert re.search(re.escape("\n".join(table)), readme), "README table differs from `gankd models`: paste it again"


def test_gankd_eval_on_image_folders_writes_a_metrics_json(tmp_path, monkeypatch, proxy_cache):
    import json

    import torch
    from PIL import Image

    from gankd import data

    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    digits = data.build("digits", split="test")
    for folder, offset in (("generated", 0), ("reference", 100)):
        (tmp_path / folder).mkdir()
        for index in range(40):
            pixels = ((digits[index + offset][0][0] + 1) * 127.5).round().to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / folder / f"{index}.png")
    out = tmp_path / "metrics.json"
    main(["eval", "--generated", str(tmp_path / "generated"), "--reference", str(tmp_path / "reference"),
          "--metrics", "fd_digits,kid_digits", "--out", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["metrics"]["fd_digits"] > 0 and result["details"]["fd_digits"]["samples_generated"] == 40
    assert result["details"]["kid_digits"]["comparable_with_published"] is False

    # 64 px generated images against the 32 px references: an error, unless --resize makes them agree.
    (tmp_path / "large").mkdir()
    for index in range(40):
        Image.open(tmp_path / "generated" / f"{index}.png").resize((64, 64)).save(tmp_path / "large" / f"{index}.png")
    import pytest

    compare = ["eval", "--generated", str(tmp_path / "large"), "--reference", str(tmp_path / "reference"),
               "--metrics", "fd_digits", "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit, match=r"generated images are \[3, 64, 64\] and reference images \[3, 32, 32\]"):
        main(compare)
    main([*compare, "--resize", "32"])
    assert json.loads(out.read_text())["metrics"]["fd_digits"] > 0


def test_gankd_eval_classifier_with_speed_and_export(tmp_path, capsys):
    import json

    import pytest
    import torch

    weights = tmp_path / "cnn.pt"
    torch.save(models.build("small_cnn", width=4, in_channels=1).state_dict(), weights)
    main(["eval", "--model", "small_cnn", "--set", "width=4", "--set", "in_channels=1", "--weights", str(weights),
          "--data", "digits", "--speed"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["metrics"]["accuracy"] <= 1 and result["details"]["samples"] == 359
    assert result["cost"]["params"] > 0 and [row["batch"] for row in result["latency"]] == [1, 64]
    assert result["cost"]["input_shapes"] == [[1, 1, 32, 32]]  # the data's size (the digits' 32 px)
    images = torch.zeros(1, 1, 32, 32)
    assert result["cost"]["macs"] == models.cost(models.build("small_cnn", width=4, in_channels=1), images)["macs"]
    pytest.importorskip("onnxruntime")
    main(["export", "--model", "small_cnn", "--set", "width=4", "--set", "in_channels=1", "--weights", str(weights),
          "--out", str(tmp_path / "cnn.onnx")])  # fmt: skip
    exported = json.loads(capsys.readouterr().out)
    assert (tmp_path / "cnn.onnx").is_file() and exported["max_abs_diff"] < 1e-4
    assert exported["input_shapes"] == [[2, 1, 32, 32]]
    main(["export", "--model", "small_cnn", "--set", "width=4", "--set", "in_channels=1", "--weights", str(weights),
          "--size", "24", "--out", str(tmp_path / "cnn24.onnx")])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["input_shapes"] == [[2, 1, 24, 24]]
    with pytest.raises(SystemExit, match="--size must be a positive image side in pixels, got 0"):
        main(["export", "--model", "small_cnn", "--weights", str(weights), "--size", "0", "--out", "x.onnx"])


def test_gankd_eval_says_what_it_needs():
    import pytest

    with pytest.raises(SystemExit, match="--generated and --reference go together"):
        main(["eval", "--generated", "somewhere"])
    with pytest.raises(SystemExit, match="--model and --data"):
        main(["eval", "--model", "small_cnn"])


def test_eval_and_export_refuse_silent_random_weights(tmp_path, capsys):
    import json

    import pytest

    model = ["--model", "small_cnn", "--set", "width=4", "--set", "in_channels=1"]
    with pytest.raises(SystemExit, match="gankd eval: error: small_cnn without --weights would be randomly initi"):
        main(["eval", *model, "--data", "digits"])
    with pytest.raises(SystemExit, match="gankd export: error: small_cnn without --weights .* --random-weights"):
        main(["export", *model, "--out", str(tmp_path / "m.onnx")])
    teacher = ["--teacher-model", "small_cnn", "--teacher-set", "width=4", "--teacher-set", "in_channels=1"]
    torch_weights = tmp_path / "cnn.pt"
    import torch

    torch.save(models.build("small_cnn", width=4, in_channels=1).state_dict(), torch_weights)
    with pytest.raises(SystemExit, match="small_cnn without --teacher-weights would be randomly initialised"):
        main(["eval", *model, "--weights", str(torch_weights), *teacher, "--data", "digits"])
    main(["eval", *model, "--random-weights", "--data", "digits", "--metrics", "accuracy"])  # meant: it runs
    assert 0 <= json.loads(capsys.readouterr().out)["metrics"]["accuracy"] <= 1


def test_version(capsys):
    import pytest

    import gankd

    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0 and capsys.readouterr().out.strip() == f"gankd {gankd.__version__}"


def test_user_errors_are_one_line_with_exit_status_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text("name: x\nmode: [unclosed\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "a_file").write_text("not a folder")
    cases = {
        ("train", str(tmp_path / "bad.yaml")): "bad.yaml is not valid YAML at line 3",
        ("train", str(tmp_path / "empty.yaml")): "empty.yaml is empty",
        ("train", "digits_cnn_teacher", "--set", "device=cuda" if not _has_cuda() else "device=mps"): "config.device",
        ("train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path / 'a_file'}"): "Not a directory",
        ("eval", "--generated", str(tmp_path / "missing"), "--reference", str(tmp_path)): "is not a folder",
        (
            "train",
            "digits_cnn_teacher",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "name=a_file",
        ): f"the run directory {tmp_path / 'a_file'} (output_dir/name) is a file: choose another name",
        (
            "export",
            "--model",
            "small_cnn",
            "--random-weights",
            "--out",
            str(tmp_path / "a_file" / "m.onnx"),
        ): f"{tmp_path / 'a_file'} is a file, not a folder",
    }
    for arguments, expected in cases.items():
        result = subprocess.run([sys.executable, "-m", "gankd.cli", *arguments], capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (arguments, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"gankd {arguments[0]}: error: ") and expected in lines[0]
    debug = subprocess.run([sys.executable, "-m", "gankd.cli", "--debug", "train", str(tmp_path / "empty.yaml")],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_operating_system_errors_read_as_path_and_reason():
    from gankd.cli import _message

    assert _message(PermissionError(13, "Permission denied", "/runs/x")) == "/runs/x: Permission denied"
    assert _message(FileExistsError(17, "File exists", "/a", None, "/b")) == "/a -> /b: File exists"
    assert _message(FileNotFoundError("config file x.yaml does not exist")) == "config file x.yaml does not exist"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_every_command_has_help_with_a_description(capsys):
    import pytest

    for command in ("models", "train", "distill", "eval", "generate", "export", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        description = text.split("\n\n")[1]
        assert not description.startswith(("positional", "options")), command
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    assert "e.g. digits_cnn_distill" in " ".join(capsys.readouterr().out.split())


def test_eval_of_a_distilled_run_needs_its_teacher_only_for_metrics_that_use_it(tmp_path, capsys):
    import json
    import shutil

    import pytest

    small = ["--set", f"output_dir={tmp_path}", "--set", "steps=2", "--set", "checkpoint_every=2",
             "--set", "data.batch_size=16"]  # fmt: skip
    main(["train", "digits_cnn_teacher", *small, "--set", "model.options.width=8"])
    main(["distill", "digits_cnn_distill", *small, "--set", "model.options.width=4",
          "--set", f"distill.teacher={tmp_path / 'digits_cnn_teacher'}"])  # fmt: skip
    shutil.move(tmp_path / "digits_cnn_teacher", tmp_path / "moved")
    capsys.readouterr()
    run = str(tmp_path / "digits_cnn_distill")
    main(["eval", "--checkpoint", run, "--metrics", "accuracy"])
    assert set(json.loads(capsys.readouterr().out)["metrics"]) == {"accuracy"}
    with pytest.raises(
        SystemExit,
        match=r"the run's teacher cannot be loaded .*digits_cnn_teacher.* the metrics "
        r"agreement compare with it: choose others with --metrics",
    ):
        main(["eval", "--checkpoint", run])
    # A run's checkpoint passed as a weights file of another width: the message says to pass it as --checkpoint.
    moved = str(tmp_path / "moved" / "checkpoints" / "last.pt")
    with pytest.raises(
        SystemExit,
        match=r"\d+ of its \d+ tensors have other shapes .*: the file is a gankd run's "
        r"checkpoint, of small_cnn with options \{.*'width': 8\}: pass it as "
        "--checkpoint",
    ):
        main(["eval", "--model", "small_cnn", "--set", "width=4", "--set", "in_channels=1", "--weights", moved,
              "--data", "digits"])  # fmt: skip


def test_eval_of_a_run_uses_the_runs_eval_settings(tmp_path, capsys):
    import json

    import pytest

    # A run evaluated on its train split, and only for accuracy: `gankd eval --checkpoint` gives its figures.
    main(["train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path}", "--set", "steps=2", "--set",
          "checkpoint_every=2", "--set", "eval.split=train", "--set", "eval.metrics=[accuracy]"])  # fmt: skip
    run = tmp_path / "digits_cnn_teacher"
    capsys.readouterr()
    main(["eval", "--checkpoint", str(run)])
    result = json.loads(capsys.readouterr().out)
    recorded = json.loads((run / "metrics.json").read_text())
    assert result["metrics"] == recorded["metrics"] and result["details"] == recorded["details"]
    main(["eval", "--checkpoint", str(run), "--split", "test"])  # an argument still says otherwise
    assert json.loads(capsys.readouterr().out)["details"]["samples"] != recorded["details"]["samples"]
    for size in ("0", "-4"):
        with pytest.raises(SystemExit):
            main(["eval", "--generated", str(tmp_path), "--reference", str(tmp_path), "--resize", size])
    assert "--resize: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"--data-set, --speed: for a model and its data, not for --generated"):
        main(
            ["eval", "--generated", str(tmp_path), "--reference", str(tmp_path), "--data-set", "channels=1", "--speed"]
        )
    with pytest.raises(SystemExit, match="--resize applies to --generated and --reference image folders only"):
        main(["eval", "--checkpoint", str(run), "--resize", "16"])
    # The LPIPS backbone's weights file is given as the Inception one is.
    generator = ["eval", "--model", "resnet_g", "--set", "ngf=4", "--set", "n_blocks=1", "--set", "n_downsampling=0",
                 "--set", "upscale=4", "--set", "residual=true", "--random-weights", "--data", "photos_sr",
                 "--metrics", "lpips"]  # fmt: skip
    missing = tmp_path / "alexnet.pth"
    with pytest.raises(SystemExit, match=rf"the path given points to {missing}, which does not exist"):
        main([*generator, "--lpips-weights", str(missing)])
    with pytest.raises(
        SystemExit, match=r"LPIPS \(VGG16 backbone\) needs the file vgg16-397923af\.pth .*the path given"
    ):
        main([*generator, "--lpips-net", "vgg", "--lpips-weights", str(missing)])
