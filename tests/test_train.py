"""Training runs on CPU: every shipped config for a few steps, exact resume, bad input, NaN, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankd.config import ConfigError, load_config
from gankd.train import CheckpointError, TrainingError, load_checkpoint, train

CONFIGS = Path(__file__).parent.parent / "configs"
# Tiny widths and batches so that a few steps take seconds; evaluation on a few samples.
SMALL = {
    "digits_dcgan": ["model.options.ngf=4", "gan.discriminator.options.ndf=4", "data.batch_size=8",
                     "eval.num_samples=64"],
    "photos_resnet": ["model.options.ngf=4", "model.options.n_blocks=2", "data.batch_size=2"],
    "digits_cnn": ["model.options.width=4", "data.batch_size=16"],
}  # fmt: skip
TEACHER_SMALL = {
    "digits_dcgan": ["model.options.ngf=8"],
    "photos_resnet": ["model.options.ngf=8"],
    "digits_cnn": ["model.options.width=8"],
}


def small_config(name: str, tmp_path: Path, *extra: str):
    family = "_".join(name.split("_")[:2])
    overrides = [f"output_dir={tmp_path}", "steps=4", "checkpoint_every=2", "log_every=1", *SMALL[family], *extra]
    return load_config(CONFIGS / f"{name}.yaml", overrides)


@pytest.fixture(autouse=True)
def _proxy(monkeypatch, proxy_cache):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))


@pytest.mark.parametrize("family", ["digits_dcgan", "photos_resnet", "digits_cnn"])
def test_teacher_and_scratch_configs_run(family, tmp_path, capsys):
    for role in ("teacher", "scratch"):
        result = train(small_config(f"{family}_{role}", tmp_path))
        run = tmp_path / f"{family}_{role}"
        said = capsys.readouterr().err  # where the run goes, at its start and its end
        assert f"{family}_{role}: training in {run}\n" in said
        assert f"{family}_{role}: finished; metrics, checkpoint and samples are in {run}\n" in said
        assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file()
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [entry["step"] for entry in log] == [1, 2, 3, 4] and all("loss" in entry for entry in log)
        assert load_checkpoint(run)["step"] == 4
        assert all(isinstance(value, float) for value in result["metrics"].values())
        if family != "digits_cnn":
            assert (run / "samples" / "final.png").is_file()


def _same_state(first: dict, second: dict) -> None:
    for key in first:
        if isinstance(first[key], torch.Tensor):
            assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize(
    "name, extra",
    [("digits_dcgan_teacher", ["optim.accumulate=2", "data.limit_per_class=3"]), ("digits_cnn_scratch", [])],
)  # the GAN: 30 digits make one step of 2 x 8 per epoch, so each resumed step starts a new epoch
def test_resume_reaches_the_same_weights(name, extra, tmp_path):
    uninterrupted = small_config(name, tmp_path / "a", "steps=6", "checkpoint_every=3", "ema=0.9", *extra)
    train(uninterrupted)
    interrupted = small_config(name, tmp_path / "b", "steps=6", "checkpoint_every=3", "ema=0.9", *extra)
    train(interrupted, stop_at=3)
    assert load_checkpoint(tmp_path / "b" / name)["step"] == 3
    train(interrupted, resume=True)
    a, b = (load_checkpoint(tmp_path / run / name) for run in ("a", "b"))
    assert a["step"] == b["step"] == 6
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / name / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]  # the resumed run logs each step once
    for part in ("model", "discriminator", "ema"):
        if a[part] is not None:
            _same_state(a[part], b[part])


def test_evaluating_and_sampling_during_training_do_not_change_what_is_trained(tmp_path):
    # Dropout draws from torch's global generator; so does every DataLoader iterator (its seed) that evaluation
    # and the sample grids start. Both runs must train the same weights.
    dropout = ["model.options.dropout=true", "data.options.length=8"]
    train(small_config("photos_resnet_teacher", tmp_path / "quiet", *dropout, "eval.every=0", "sample_every=0"))
    train(small_config("photos_resnet_teacher", tmp_path / "busy", *dropout, "eval.every=1", "sample_every=1"))
    quiet, busy = (load_checkpoint(tmp_path / run / "photos_resnet_teacher") for run in ("quiet", "busy"))
    _same_state(quiet["model"], busy["model"])


def test_existing_run_missing_resume_and_changed_config(tmp_path):
    config = small_config("digits_cnn_teacher", tmp_path, "steps=2")
    train(config)
    with pytest.raises(TrainingError, match="already holds a run: pass --resume"):
        train(config)
    changed = small_config("digits_cnn_teacher", tmp_path, "steps=3", "optim.lr=0.5")
    with pytest.raises(TrainingError, match=r"cannot resume with optim.lr: 0.002 -> 0.5: a resumed run keeps"):
        train(changed, resume=True)
    with pytest.raises(TrainingError, match="does not exist"):
        train(small_config("digits_cnn_scratch", tmp_path), resume=True)
    longer = small_config("digits_cnn_teacher", tmp_path, "steps=3")  # the shipped schedule is cosine
    with pytest.raises(TrainingError, match="only constant schedules can be extended"):
        train(longer, resume=True)


def test_cli_resume_continues_with_the_runs_recorded_config(tmp_path, capsys):
    # The README's two lines: a run started with overrides, then `--resume` with the plain config file.
    from gankd.cli import main

    small = [item for override in SMALL["digits_cnn"] for item in ("--set", override)]
    start = ["--set", f"output_dir={tmp_path}", "--set", "checkpoint_every=1", "--set", "optim.schedule=constant",
             *small]  # fmt: skip
    main(["train", "digits_cnn_teacher", *start, "--set", "steps=2", "--set", "optim.lr=1e-3"])
    main(["train", str(CONFIGS / "digits_cnn_teacher.yaml"), "--set", f"output_dir={tmp_path}", "--set", "steps=3",
          "--resume"])  # fmt: skip
    state = load_checkpoint(tmp_path / "digits_cnn_teacher")
    assert state["step"] == 3 and state["config"]["optim"]["lr"] == 1e-3
    with pytest.raises(SystemExit, match=r"optim.lr: 0.001 -> 0.002: .* drop those --set overrides"):
        main(["train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path}", "--set", "optim.lr=2e-3", "--resume"])
    with pytest.raises(SystemExit, match="holds no run .* start it without --resume"):
        main(["train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path / 'new'}", "--resume"])


def test_a_fresh_run_starts_a_fresh_log_over_an_aborted_runs(tmp_path):
    stale = tmp_path / "digits_cnn_teacher" / "log.jsonl"  # an aborted run's log, no checkpoint
    stale.parent.mkdir()
    stale.write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 9.0}\n')
    train(small_config("digits_cnn_teacher", tmp_path))
    steps = [json.loads(line)["step"] for line in stale.read_text().splitlines()]
    assert steps == sorted(set(steps)) and all(
        json.loads(line)["loss"] != 9.0 for line in stale.read_text().splitlines()
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # lr 1e30: step 1's checkpoint holds weights near 1e30 though its loss was finite; step 2 diverges. No
    # checkpoint was verified by finite steps after it, so none is presented as good.
    config = small_config("digits_cnn_teacher", tmp_path, "steps=6", "checkpoint_every=1", "optim.lr=1e30")
    with pytest.raises(TrainingError, match=r"no checkpoint is known good: .* kept as .*last-unverified\.pt"):
        train(config)
    checkpoints = tmp_path / "digits_cnn_teacher" / "checkpoints"
    assert not (checkpoints / "last.pt").exists() and (checkpoints / "last-unverified.pt").exists()


def test_a_diverged_run_rolls_back_to_the_verified_checkpoint(tmp_path, monkeypatch):
    from gankd.train import stepper as stepper_module

    real_step = stepper_module.Stepper.step

    def diverging(self, batch, step):
        if step == 3:  # the 4th step: checkpoints of steps 1, 2, 3 were written, step 3's is unverified
            raise stepper_module.NonFiniteLoss("loss is nan")
        return real_step(self, batch, step)

    monkeypatch.setattr(stepper_module.Stepper, "step", diverging)
    config = small_config("digits_cnn_teacher", tmp_path, "steps=6", "checkpoint_every=1")
    with pytest.raises(TrainingError, match=r"the last good checkpoint, step 2, is .*last\.pt \(the one of step 3"):
        train(config)
    assert load_checkpoint(tmp_path / "digits_cnn_teacher")["step"] == 2


def test_corrupt_and_foreign_checkpoints(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* corrupt .* or not a gankd checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
    # Random bytes, and a pickled object weights_only refuses: never torch's advice to load unsafely.
    (tmp_path / "random.pt").write_bytes(bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()))
    torch.save({"model": {}, "config": object()}, tmp_path / "pickled.pt")
    for name in ("random.pt", "pickled.pt"):
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(tmp_path / name)
        assert "weights_only=False" not in str(raised.value) and "never loads a file that could run code" in str(
            raised.value
        )
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a gankd checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="without checkpoints/last.pt"):
        load_checkpoint(tmp_path)


def test_cli_reports_errors_without_a_traceback(tmp_path):
    from gankd.cli import main

    with pytest.raises(SystemExit, match="gankd train: error: config.model.name 'dcgan_x' is not registered"):
        main(["train", str(CONFIGS / "digits_dcgan_teacher.yaml"), "--set", "model.name=dcgan_x",
              "--set", f"output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(SystemExit, match="gankd train: error: unknown key config.stepz"):
        main(["train", str(CONFIGS / "digits_cnn_teacher.yaml"), "--set", "stepz=1"])
    with pytest.raises(SystemExit, match="is a distillation config: run it with gankd distill"):
        main(["train", str(CONFIGS / "digits_cnn_distill.yaml")])
    with pytest.raises(SystemExit, match="gankd distill: error: distilling needs a config with mode: distill"):
        main(["distill", str(CONFIGS / "digits_cnn_teacher.yaml")])


def test_torchrun_two_cpu_processes(tmp_path):
    # Two gloo processes on this CPU: each trains on its shard, gradients averaged, rank 0 writes.
    overrides = [f"output_dir={tmp_path}", "steps=4", "checkpoint_every=2", "log_every=2", *SMALL["digits_cnn"]]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "gankd.cli", "train", str(CONFIGS / "digits_cnn_teacher.yaml")]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_cnn_teacher"
    assert load_checkpoint(run)["step"] == 4
    assert len((run / "log.jsonl").read_text().splitlines()) == 2  # one writer


def test_eval_and_export_from_a_run_directory(tmp_path, capsys):
    from gankd.cli import main

    train(small_config("digits_cnn_teacher", tmp_path, "steps=2"))
    run = tmp_path / "digits_cnn_teacher"
    main(["eval", "--checkpoint", str(run)])
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["metrics"]["accuracy"] <= 1 and result["details"]["samples"] == 359
    pytest.importorskip("onnxruntime")
    main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "model.onnx")])
    assert json.loads(capsys.readouterr().out)["max_abs_diff"] < 1e-4
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", "--checkpoint", str(tmp_path / "absent")])


@pytest.mark.parametrize("family", ["digits_dcgan", "photos_resnet", "digits_cnn"])
def test_distill_configs_run_from_a_teacher_run(family, tmp_path):
    train(small_config(f"{family}_teacher", tmp_path, "steps=2", *TEACHER_SMALL[family]))
    teacher = tmp_path / f"{family}_teacher"
    config = small_config(f"{family}_distill", tmp_path, f"distill.teacher={teacher}", *TEACHER_SMALL[family][1:])
    result = train(config)
    log = [json.loads(line) for line in (tmp_path / f"{family}_distill" / "log.jsonl").read_text().splitlines()]
    weighted = set(config.terms)
    assert weighted <= set(log[-1]) and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log)
    if family == "digits_cnn":
        assert "agreement" in result["metrics"]


def test_distill_from_a_missing_teacher_or_wrong_layer(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(small_config("digits_cnn_distill", tmp_path, f"distill.teacher={tmp_path / 'nowhere'}"))
    train(small_config("digits_cnn_teacher", tmp_path, "steps=2"))
    teacher = tmp_path / "digits_cnn_teacher"
    with pytest.raises(ConfigError, match="student .*no module at path 'conv4'"):
        terms = "terms={kd: 1.0, attention: {pairs: {conv4: conv3}}}"
        train(small_config("digits_cnn_distill", tmp_path, f"distill.teacher={teacher}", terms))
    # Pooled taps give the attention term nothing to compare: refused before the run starts, naming the pair.
    with pytest.raises(ConfigError, match="'attention' term on student 'pool' .*more than one spatial position"):
        terms = "terms={kd: 1.0, attention: {pairs: {pool: pool}}}"
        train(small_config("digits_cnn_distill", tmp_path / "pooled", f"distill.teacher={teacher}", terms))
    assert not (tmp_path / "pooled").exists()


def test_demo_pipeline_on_a_reduced_budget(tmp_path, monkeypatch):
    from gankd.train.demo import run_demo

    monkeypatch.setenv("GANKD_CACHE", str(tmp_path / "cache"))
    lines = []
    result = run_demo(tmp_path, ["steps=3", "eval.num_samples=64"], log=lines.append)
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"teacher", "distilled", "scratch"}
    assert (
        rows["distilled"]["macs"] == rows["scratch"]["macs"]
        and 8 * rows["distilled"]["macs"] <= rows["teacher"]["macs"]
    )
    report = Path(result["dir"]) / "report.md"
    assert report.is_file() and "| distilled |" in report.read_text()
    assert (Path(result["dir"]) / "samples_distilled.png").is_file()
    run_demo(tmp_path / "again", ["steps=3", "eval.num_samples=64"], log=lines.append)
    assert any(line.startswith("teacher: reusing") for line in lines)


def test_limited_label_subset_is_balanced_and_seeded(tmp_path):
    from gankd.train.builders import build_dataset

    config = small_config("digits_cnn_scratch", tmp_path, "data.limit_per_class=3")
    subset = build_dataset(config, "train")
    labels = [subset[i][1] for i in range(len(subset))]
    assert len(subset) == 30 and all(labels.count(label) == 3 for label in range(10))
    assert subset.indices == build_dataset(config, "train").indices
    assert len(build_dataset(config, "test")) == 359  # evaluation always sees the whole test split
    photos = small_config("photos_resnet_scratch", tmp_path, "data.limit_per_class=3")
    with pytest.raises(ValueError, match="needs a data set whose items are"):
        build_dataset(photos, "train")


def test_keep_unlabelled_hides_the_labels_of_the_other_items(tmp_path):
    from gankd.distill.terms.logits import NO_LABEL
    from gankd.train.builders import build_dataset

    config = small_config("digits_cnn_distill", tmp_path, "data.limit_per_class=3", "data.keep_unlabelled=true")
    partly = build_dataset(config, "train", training=True)
    labels = [partly[i][1] for i in range(len(partly))]
    chosen = build_dataset(small_config("digits_cnn_scratch", tmp_path, "data.limit_per_class=3"), "train").indices
    assert len(partly) == 1438 and [i for i, label in enumerate(labels) if label != NO_LABEL] == chosen
    full = build_dataset(small_config("digits_cnn_scratch", tmp_path), "train")
    assert all(torch.equal(partly[i][0], full[i][0]) for i in (chosen[0], 0, 1437))  # every image, as it was
    assert [labels[i] for i in chosen] == [full[i][1] for i in chosen]
    # Evaluation on the train split sees every item with its label.
    seen = build_dataset(config, "train")
    assert len(seen) == 1438 and all(seen[i][1] == full[i][1] for i in (0, 700, 1437))


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("digits_cnn_distill", [], "keep_unlabelled hides the labels beyond config.data.limit_per_class"),
        ("digits_dcgan_teacher", ["data.limit_per_class=3"], "task 'generator' cannot train on items without a label"),
        ("digits_cnn_scratch", ["data.limit_per_class=3"], r"none of the terms \['ce'\] learns from items without"),
        ("digits_cnn_distill", ["data.limit_per_class=3", "terms={kd: 1.0, label_reader: 1.0}"],
         "'label_reader' reads the labels and cannot skip the hidden ones"),
    ],
)  # fmt: skip
def test_keep_unlabelled_is_refused_where_it_cannot_work(tmp_path, name, overrides, message):
    from gankd import distill
    from gankd.train.checks import check_run

    if "label_reader" not in distill.term_names():

        @distill.register_term("label_reader")
        class LabelReader(distill.LossTerm):  # a label term that does not say it skips hidden labels
            needs_target = True
            outputs = ("logits",)

            def forward(self, step):
                return step.student_output.gather(1, step.target[:, None]).mean()

    with pytest.raises(ValueError, match=message):
        check_run(small_config(name, tmp_path, *overrides, "data.keep_unlabelled=true"))


def test_a_nan_discriminator_loss_stops_the_step_before_any_update(tmp_path, monkeypatch):
    from gankd.train.distributed import Distributed
    from gankd.train.objective import build_objective
    from gankd.train.stepper import NonFiniteLoss, Stepper

    config = small_config("digits_dcgan_teacher", tmp_path)
    distiller = build_objective(config, Distributed())
    stepper = Stepper(config, Distributed(), distiller)
    before = [tensor.clone() for tensor in (*distiller.student.parameters(), *distiller.discriminator.parameters())]
    nan = torch.tensor(float("nan"), requires_grad=True)
    monkeypatch.setattr(distiller, "discriminator_loss", lambda *args, **kwargs: nan * 1.0)
    batch = (torch.rand(8, 1, 32, 32) * 2 - 1, torch.randint(0, 10, (8,)))
    with pytest.raises(NonFiniteLoss, match="d_loss=nan"):
        stepper.step([batch], 0)
    after = [*distiller.student.parameters(), *distiller.discriminator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # the student's step was not applied
    assert all(parameter.grad is None for parameter in after)


def test_progress_in_a_log_file_is_a_line_per_logged_step(tmp_path):
    # Output to a pipe (a job's log file) gets plain lines, not thousands of redrawn progress bars.
    command = [sys.executable, "-m", "gankd.cli", "train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path}",
               "--set", "steps=4", "--set", "log_every=2", "--set", "checkpoint_every=2", *sum(
                   (["--set", item] for item in SMALL["digits_cnn"]), [])]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("digits_cnn_teacher: step ")]
    assert [line.split()[2] for line in lines] == ["2/4", "4/4"]


def test_a_data_file_that_fails_mid_run_stops_it_with_the_completed_steps_saved(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    import gankd.data.folders

    for index in range(20):
        folder = tmp_path / "images" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), index * 10, np.uint8)).save(folder / f"{index}.png")
    reads = []

    def read_image(path, channels):  # the 9th read fails: a file that broke after the data set was checked
        reads.append(path)
        if len(reads) >= 9:
            raise ValueError(f"cannot read image {path}: broken data stream")
        return original(path, channels)

    original = gankd.data.folders.read_image
    monkeypatch.setattr(gankd.data.folders, "read_image", read_image)
    config = small_config(
        "digits_cnn_teacher",
        tmp_path,
        "steps=10",
        "checkpoint_every=100",
        "data.batch_size=4",
        "data.name=image_folder",
        f"data.options={{root: {tmp_path / 'images'}, channels: 1}}",
    )
    run = tmp_path / "digits_cnn_teacher"
    with pytest.raises(TrainingError) as error:
        train(config)
    assert str(error.value) == (f"step 3: its batch cannot be loaded: cannot read image {reads[-1]}: broken data "
                                f"stream; {run / 'checkpoints' / 'last.pt'} holds step 2: continue with --resume, "
                                "once the file is fixed or removed")  # fmt: skip
    assert load_checkpoint(run)["step"] == 2
    assert f"digits_cnn_teacher: data: checked the 20 items of {tmp_path / 'images'} in" in capsys.readouterr().err
    # From a DataLoader worker the error arrives wrapped in the worker's traceback: its last line is the message.
    from gankd.train.loop import _last_line

    wrapped = ValueError(
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
        'last):\n  File "folders.py", line 9, in _load\nValueError: cannot read image x.png: bad\n'
    )
    assert _last_line(wrapped) == "cannot read image x.png: bad" and _last_line(ValueError("a: b")) == "a: b"


def test_a_checkpoint_write_that_fails_names_the_file_and_keeps_the_earlier_one(tmp_path, monkeypatch):
    import gankd.train.checkpoint

    saves = []

    def save(state, path):  # the second write fails as a full disk makes torch.save fail
        saves.append(path)
        if len(saves) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1024 vs 512")
        original(state, path)

    original = gankd.train.checkpoint.torch.save
    monkeypatch.setattr(gankd.train.checkpoint.torch, "save", save)
    with pytest.raises(CheckpointError) as error:
        train(small_config("digits_cnn_teacher", tmp_path))
    checkpoints = tmp_path / "digits_cnn_teacher" / "checkpoints"
    assert str(error.value).startswith(f"cannot write the checkpoint {checkpoints / 'next.pt'} ([enforce fail")
    assert "any earlier checkpoint there is unchanged" in str(error.value)
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 2
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_a_model_that_does_not_fit_the_data_or_teacher_is_named_at_step_1(tmp_path):
    with pytest.raises(
        TrainingError,
        match=r"step 1: Given groups=1, .* The run's parts may not fit each other: the "
        r"model small_cnn \{'in_channels': 3, .*data digits \(items \[1, 32, 32\], "
        r"labels\); check the model's options \(in_channels",
    ):
        train(small_config("digits_cnn_teacher", tmp_path, "model.options.in_channels=3"))
    train(small_config("digits_dcgan_teacher", tmp_path, *TEACHER_SMALL["digits_dcgan"]))
    distill = small_config("digits_cnn_distill", tmp_path, f"distill.teacher={tmp_path / 'digits_dcgan_teacher'}")
    with pytest.raises(
        TrainingError,
        match=r"the teacher DCGANGenerator .* the teacher is a generator \(it takes "
        r"noise\) but the task is classifier: use a classifier teacher",
    ):
        train(distill)
