"""A loss term, a metric, a model and a task of the user's own (tests/user_plugin.py), each one registered
class, used from YAML run configs through `imports`, with no edit inside gankd; and the registries' errors."""

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gankd import data, distill, metrics, models, tasks
from gankd.config import load_config
from gankd.plugins import import_plugins
from gankd.registry import Registry
from gankd.train import load_trained_model, train

PLUGIN = Path(__file__).parent / "user_plugin.py"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The plugin file beside the configs that import it by a relative path (loaded once per process)."""
    folder = tmp_path_factory.mktemp("user")
    shutil.copy(PLUGIN, folder / PLUGIN.name)
    return folder / PLUGIN.name


@pytest.fixture(autouse=True)
def _proxy(monkeypatch, proxy_cache):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def gankd_cli(*arguments: str) -> subprocess.CompletedProcess:
    """The gankd command in a fresh process: only the config's `imports` can register the user's classes."""
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "gankd.cli", *arguments], capture_output=True, text=True,
                            timeout=600, env=environment)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_users_tuple_block_is_tapped_and_its_model_sized_on_the_runs_data(plugin, tmp_path):
    # A teacher file of the user's own model, distilled through an adapter on a tuple element (`block[0]`: no
    # layer declares its channels, so they are read from the run's data), its student sized for 1/4 of the
    # teacher's MACs on the run's 1-channel digits (the model has no example_inputs) and pruned from it. The
    # model is registered in fresh processes only, as a user's run registers it.
    teacher = tmp_path / "teacher.pt"
    in_plugin_process(
        plugin,
        f"torch.manual_seed(0); torch.save(models.build('user_tuple_cnn', width=16).state_dict(), {str(teacher)!r})",
    )
    config = write_config(plugin.parent / "tuple.yaml", {
        "name": "tuple_student", "task": "classifier", "mode": "distill", "imports": [PLUGIN.name],
        "model": {"name": "user_tuple_cnn", "options": {"width": 4}}, "data": {"name": "digits", "batch_size": 8},
        "terms": {"kd": 1.0, "adapted": {"weight": 1.0, "pairs": {"block[0]": "block[0]"}}},
        "distill": {"teacher": {"model": {"name": "user_tuple_cnn", "options": {"width": 16}}, "weights": str(teacher)},
                    "student_init": "teacher", "student_macs": 0.25},
        "steps": 2, "checkpoint_every": 2, "output_dir": str(tmp_path / "runs")})  # fmt: skip
    gankd_cli("distill", str(config))
    width = yaml.safe_load((tmp_path / "runs" / "tuple_student" / "config.yaml").read_text())["model"]["options"]
    macs = in_plugin_process(plugin, "images = torch.zeros(1, 1, 32, 32); print(json.dumps([models.cost("
                             f"models.build('user_tuple_cnn', width=width), images)['macs'] for width in (16, "
                             f"{width['width']}, {width['width'] + 1})]))")  # fmt: skip
    teacher_macs, chosen, wider = json.loads(macs)
    assert chosen <= 0.25 * teacher_macs < wider


def in_plugin_process(plugin: Path, code: str) -> str:
    """Run `code` in a fresh Python process that has imported the user's plugin; its standard output."""
    setup = "import json, torch; from gankd import models; from gankd.plugins import import_plugins; "
    setup += f"import_plugins([{str(plugin)!r}])"
    result = subprocess.run([sys.executable, "-c", f"{setup}\n{code}"], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_imports_given_on_the_command_line_are_found_from_there(tmp_path, monkeypatch):
    (tmp_path / "nothing_to_register.py").write_text("")
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["imports=[nothing_to_register.py]"])
    assert config.imports == [str(tmp_path / "nothing_to_register.py")]  # recorded so: runs from anywhere


def test_a_module_that_fails_while_it_runs_is_named(tmp_path, monkeypatch):
    (tmp_path / "gankd_test_failing_plugin.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="cannot import module 'gankd_test_failing_plugin': RuntimeError: no GPU"):
        import_plugins(["gankd_test_failing_plugin"])


def test_user_term_metric_and_model_from_yaml(plugin, tmp_path):
    runs = tmp_path / "runs"
    common = {"task": "classifier", "data": {"name": "digits", "batch_size": 32}, "imports": [PLUGIN.name],
              "output_dir": str(runs), "log_every": 1, "checkpoint_every": 100}  # fmt: skip
    teacher = write_config(plugin.parent / "teacher.yaml", common | {
        "name": "mlp_teacher", "mode": "teacher", "model": {"name": "user_mlp", "options": {"hidden": 64}},
        "optim": {"lr": 0.003, "betas": [0.9, 0.999]}, "terms": {"ce": 1.0}, "steps": 40})  # fmt: skip
    student = write_config(plugin.parent / "student.yaml", common | {
        "name": "mlp_student", "mode": "distill", "model": {"name": "user_mlp", "options": {"hidden": 8}},
        "optim": {"lr": 0.003, "betas": [0.9, 0.999]}, "steps": 6,
        "terms": {"kd": 0.5, "user_logit_l1": {"weight": 0.1, "scale": 2.0}},
        "distill": {"teacher": str(runs / "mlp_teacher")},
        "eval": {"metrics": ["accuracy", "agreement", "user_confidence"]}})  # fmt: skip
    gankd_cli("train", str(teacher))
    gankd_cli("distill", str(student))

    run = runs / "mlp_student"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 7))
    for entry in log:  # the user's term is computed, weighted and summed like the built-in ones
        assert entry["user_logit_l1"] > 0
        assert entry["loss"] == pytest.approx(0.5 * entry["kd"] + 0.1 * entry["user_logit_l1"], rel=1e-5)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["imports"] == [str(plugin)]  # recorded with its absolute path

    # The run's metrics include the user's metric, equal to an independent computation on the trained model
    # (loading the run imports the plugin, so its model class is found).
    result = json.loads((run / "metrics.json").read_text())
    model, config, _ = load_trained_model(run)
    assert isinstance(model, models.build("user_mlp").__class__) and config.terms["user_logit_l1"]["scale"] == 2.0
    images = metrics.stack_images(data.build("digits", "test"))
    with torch.no_grad():
        expected = model(images).softmax(-1).amax(-1).mean().item()
    assert result["metrics"]["user_confidence"] == pytest.approx(expected, rel=1e-5)
    assert set(result["metrics"]) == {"accuracy", "agreement", "user_confidence"}


def test_user_task_trains_from_yaml(plugin, tmp_path):
    config = write_config(plugin.parent / "denoise.yaml", {
        "name": "denoise", "task": "user_denoise", "mode": "teacher", "imports": [PLUGIN.name],
        "model": {"name": "resnet_g", "options": {"in_channels": 1, "out_channels": 1, "ngf": 4, "n_blocks": 1,
                                                  "norm": "none", "residual": True}},
        "data": {"name": "digits", "batch_size": 16}, "terms": {"ground_truth": 1.0},
        "optim": {"lr": 0.002, "betas": [0.9, 0.999]}, "steps": 3, "output_dir": str(tmp_path)})  # fmt: skip
    result = train(load_config(config))
    assert set(result["metrics"]) == {"psnr"} and 5 < result["metrics"]["psnr"] < 60
    assert tasks.build("user_denoise").name == "user_denoise" and "user_denoise" in tasks.names()


def test_registry_errors_name_what_is_valid():
    registry = Registry("widget")
    registry.register("one")(dict)
    with pytest.raises(ValueError, match="widget 'one' is already registered"):
        registry.add("one", list)
    with pytest.raises(ValueError, match="unknown widget 'two'; valid names: one"):
        registry.build("two")
    with pytest.raises(TypeError, match="a widget name must be a non-empty str"):
        registry.add("", list)
    with pytest.raises(ValueError, match="loss term 'kd' is already registered"):
        distill.register_term("kd")(type("Again", (distill.LossTerm,), {}))
    with pytest.raises(ValueError, match="'total' names a logged scalar, not a loss term"):
        distill.register_term("total")
    term = distill.terms.term_class("ce")()
    with pytest.raises(ValueError, match="'lr' names a logged scalar, not a loss term: rename the term"):
        distill.Distiller(None, models.build("small_cnn", width=2), task="classifier", terms={"lr": term})
    with pytest.raises(TypeError, match="a loss term must be a subclass of LossTerm"):
        distill.register_term("not_a_term")(object)
    with pytest.raises(ValueError, match="metric 'psnr' is already registered"):
        metrics.register_metric("psnr", evidence=metrics.PairedImages)(lambda evidence, names, settings: ({}, {}))
    with pytest.raises(TypeError, match="evidence must be one of ImageSets, PairedImages, Predictions"):
        metrics.register_metric("new_metric", evidence=dict)
    with pytest.raises(TypeError, match="a task must be a subclass of Task"):
        tasks.register("not_a_task")(object)
    assert {"ce", "kd", "logit_mse"} <= set(distill.term_names("logits"))
    assert "kd" not in distill.term_names("image") and "adversarial" in distill.term_names("image")
    assert metrics.names(metrics.Predictions)[:2] == ["accuracy", "agreement"]


def test_a_plugin_imported_twice_registers_once(tmp_path, monkeypatch):
    plugin = tmp_path / "twice_plugin.py"
    plugin.write_text(
        "import gankd.distill\n\n\n"
        "@gankd.distill.register_term('twice_term')\n"
        "class Twice(gankd.distill.LossTerm):\n"
        "    def forward(self, step):\n"
        "        return step.student_output.float().mean()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("twice_plugin")
    assert import_plugins([str(plugin), "twice_plugin"]) == [module, module]  # the imported module is reused
    # Executed again under another name (or after a failed first import): the same definition registers quietly.
    spec = importlib.util.spec_from_file_location("twice_plugin_again", plugin)
    again = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "twice_plugin_again", again)  # as an importer places it before running it
    spec.loader.exec_module(again)
    assert "twice_term" in distill.term_names()
    other = tmp_path / "other_plugin.py"
    other.write_text(plugin.read_text().replace("class Twice", "class Other"))
    with pytest.raises(ImportError, match="loss term 'twice_term' is already registered"):
        import_plugins([str(other)])
