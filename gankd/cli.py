"""The `gankd` command: train, distill, eval, generate, export, models, demo (each with --help)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

WEIGHTS_FORMAT_HELP = "the weights file's format, a gankd.models.weights_formats() name (default gankd; e.g. cyclegan)"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The cost table as Markdown: params and MACs in millions; a student row also shows how many times
    fewer MACs it needs than the teacher row of the same model."""
    lines = [
        "| model | role | options | input | params (M) | MACs (M) | teacher MACs / student MACs |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    teacher_macs: dict[str, int] = {}
    for row in rows:
        if row["role"] == "teacher":
            teacher_macs[row["name"]] = row["macs"]
        saving = f"{teacher_macs[row['name']] / row['macs']:.1f}" if row["role"] == "student" else ""
        cells = (row["name"], row["role"], row["options"] or "defaults", row["input"],
                 f"{row['params'] / 1e6:,.3f}", f"{row['macs'] / 1e6:,.1f}", saving)  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _models(arguments: argparse.Namespace) -> None:
    from gankd.models import cost_table

    print(format_table(cost_table()))
    print()
    print("Batch 1 at each model's default input size; MACs = torch.utils.flop_counter FLOPs / 2 (conv, matmul).")


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _option(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value), the value read as YAML (8, 0.5, true, [1, 2], text), as config --set does."""
    from gankd.config import read_yaml

    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, read_yaml(value)


def _built_model(name: str, options: list[tuple[str, Any]], weights: str | None, weights_format: str = "gankd", *,
                 random_weights: bool = False, command: str, flag: str = "--weights"):  # fmt: skip
    from gankd.models import WeightsFormatError, build

    if weights is None and not random_weights:
        raise SystemExit(f"gankd {command}: error: {name} without {flag} would be randomly initialised: give its "
                         f"trained weights with {flag} FILE (or pass --random-weights to mean it)")  # fmt: skip
    try:
        return build(name, weights=weights, weights_format=weights_format, **dict(options)).eval()
    except WeightsFormatError as error:
        raise SystemExit(f"gankd: error: {error}") from None


def _write_json(result: dict, out: str | None) -> None:
    import json
    from pathlib import Path

    text = json.dumps(result, indent=2, default=str)
    if out is None:
        print(text)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n")
    print(f"wrote {out}")


def _eval(arguments: argparse.Namespace) -> None:
    from gankd.metrics import MetricWeightsError

    try:
        _evaluate(arguments)
    except (MetricWeightsError, ValueError, TypeError) as error:
        raise SystemExit(f"gankd eval: {error}") from None


# gankd eval's arguments for a model and its data, which comparing two image folders has no use for.
FOLDER_EVAL_IGNORES = ("checkpoint", "model", "set", "weights", "random_weights", "teacher_model", "teacher_set",
                       "teacher_weights", "data", "data_set", "split", "task", "speed")  # fmt: skip


def _evaluate(arguments: argparse.Namespace) -> None:
    from torch import Tensor

    from gankd import data, metrics, tasks
    from gankd.models import cost

    names = arguments.metrics.split(",") if arguments.metrics else None
    if arguments.generated or arguments.reference:
        if not (arguments.generated and arguments.reference):
            raise SystemExit("gankd eval: --generated and --reference go together")
        ignored = [f"--{name.replace('_', '-')}" for name in FOLDER_EVAL_IGNORES if getattr(arguments, name)]
        if ignored:
            raise SystemExit(f"gankd eval: {', '.join(ignored)}: for a model and its data, not for --generated and "
                             "--reference (two image folders compared as sets); leave them out")  # fmt: skip
        generated, reference = (
            metrics.stack_images(data.build("image_folder", "test", root=folder, flip=False))
            for folder in (arguments.generated, arguments.reference)
        )
        if arguments.resize is not None:
            generated, reference = (_resized(images, arguments.resize) for images in (generated, reference))
        try:
            result = metrics.evaluate_images(generated, reference, names or ["fid", "kid"],
                                             inception_weights=arguments.inception_weights)  # fmt: skip
        except ValueError as error:
            raise SystemExit(f"gankd eval: error: {error}") from None
        return _write_json(result, arguments.out)
    teacher, config = None, None
    if arguments.checkpoint:
        from gankd.train import CheckpointError, load_trained_model

        try:
            model, config, _ = load_trained_model(arguments.checkpoint)
        except CheckpointError as error:
            raise SystemExit(f"gankd eval: {error}") from None
        data_name = arguments.data or config.data.name
        # The run's own data options, with --data-set on top (another data set starts from none of them).
        run_options = dict(config.data.options) if data_name == config.data.name else {}
        data_options = run_options | dict(arguments.data_set)
    elif arguments.model and arguments.data:
        model = _built_model(arguments.model, arguments.set, arguments.weights, arguments.weights_format,
                             random_weights=arguments.random_weights, command="eval")  # fmt: skip
        data_name, data_options = arguments.data, dict(arguments.data_set)
    else:
        raise SystemExit("gankd eval: give --checkpoint, or --model and --data, or --generated and --reference")
    if arguments.resize is not None:
        raise SystemExit("gankd eval: --resize applies to --generated and --reference image folders only; a model's "
                         "images come out at its data set's size (change it with --data-set)")  # fmt: skip
    # A run's own evaluation settings (config.eval) unless an argument says otherwise, so that it gives its
    # metrics.json's figures.
    run_eval = config.eval if config is not None else None
    split = arguments.split or (run_eval.split if run_eval is not None else "test")
    dataset = data.build(data_name, split, **data_options)
    task_name = arguments.task or (config.task if config is not None else None)
    task = tasks.build(task_name) if task_name else tasks.infer(model, dataset[0])
    if arguments.teacher_model:
        teacher = _built_model(arguments.teacher_model, arguments.teacher_set, arguments.teacher_weights,
                               arguments.teacher_weights_format, random_weights=arguments.random_weights,
                               command="eval", flag="--teacher-weights")  # fmt: skip
    names = (
        names
        or (run_eval.metrics if run_eval is not None else None)
        or task.default_metrics(dataset, teacher=teacher is not None or _has_teacher(config))
    )
    wants_teacher = metrics.needs_teacher(names) or task.compares_with_teacher
    if teacher is None and _has_teacher(config) and wants_teacher:  # only then load the teacher
        # A task that compares with the teacher (no ground truth) needs it for every metric.
        teacher = _run_teacher(config, [name for name in names if metrics.needs_teacher([name])] or names)
    # Where the standard metrics' weights are and which LPIPS backbone: the arguments, else the run's settings.
    keys = ("inception_weights", "lpips_net", "lpips_weights")
    given = {key: getattr(run_eval, key) for key in keys} if run_eval is not None else {}
    given |= {key: getattr(arguments, key) for key in keys if getattr(arguments, key)}
    settings = metrics.MetricSettings(**{key: value for key, value in given.items() if value})
    num_samples = (run_eval.num_samples or None) if run_eval is not None else None
    result = task.evaluate(model, dataset, names, teacher=teacher, settings=settings, num_samples=num_samples)
    if arguments.speed:
        inputs = _speed_inputs(task, model, dataset)
        one = inputs(1)
        shapes = [list(value.shape) for value in one if isinstance(value, Tensor)]
        result["cost"] = dict(cost(model, *one), input_shapes=shapes)
        result["latency"] = metrics.measure_latency(model, inputs)
    _write_json(result, arguments.out)


def _speed_inputs(task, model, dataset):
    """batch -> the model's inputs for `batch` copies of the data set's first item, as the task feeds it: cost
    and latency at the size of the data, not of the model's default example."""
    from torch import Tensor
    from torch.utils.data import default_collate

    from gankd.train import model_inputs

    one = model_inputs(task, model, tuple(default_collate([dataset[0]])))

    def inputs(batch: int) -> tuple:
        return tuple(value.expand(batch, *value.shape[1:]).contiguous() if isinstance(value, Tensor) else value
                     for value in one)  # fmt: skip

    return inputs


def _resized(images, size: int):
    """`images` resized to size x size (bilinear, antialiased), with a note on stderr when that changes them."""
    import sys

    import torch.nn.functional as F

    if tuple(images.shape[2:]) == (size, size):
        return images
    print(f"gankd eval: resizing {len(images)} images from {tuple(images.shape[2:])} to {(size, size)} (--resize)",
          file=sys.stderr)  # fmt: skip
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)


def _run_teacher(config, names: list[str]):
    """The teacher a distillation run recorded, or an error saying which metrics need it and how to do without."""
    from gankd.train import CheckpointError, load_teacher

    try:
        # In the mode it was distilled and evaluated in: distill.teacher_mode (train: batch statistics, dropout).
        return load_teacher(config).model.train(config.distill.teacher_mode == "train")
    except (CheckpointError, OSError, ValueError) as error:
        raise SystemExit(f"gankd eval: error: the run's teacher cannot be loaded ({error}); the metrics "
                         f"{','.join(names)} compare with it: choose others with --metrics, or give a teacher with "
                         "--teacher-model and --teacher-weights") from None  # fmt: skip


def _has_teacher(config) -> bool:
    return config is not None and config.mode == "distill"


def _generate(arguments: argparse.Namespace) -> None:
    from gankd.train import generate

    result = generate(arguments.checkpoint, arguments.out, count=arguments.count, inputs=arguments.inputs,
                      input_options=dict(arguments.inputs_set), paired=arguments.paired, reference=arguments.reference,
                      batch_size=arguments.batch_size, seed=arguments.seed, device=arguments.device)  # fmt: skip
    print(f"wrote {result['written']} images to {result['folder']}")


def _export(arguments: argparse.Namespace) -> None:
    from gankd.metrics import export_onnx
    from gankd.models import example_inputs

    if arguments.size is not None and arguments.size < 1:
        raise SystemExit(f"gankd export: --size must be a positive image side in pixels, got {arguments.size}")
    if arguments.checkpoint:
        from gankd.train import CheckpointError, load_trained_model

        try:
            model = load_trained_model(arguments.checkpoint)[0]
        except CheckpointError as error:
            raise SystemExit(f"gankd export: {error}") from None
    elif arguments.model:
        model = _built_model(arguments.model, arguments.set, arguments.weights, arguments.weights_format,
                             random_weights=arguments.random_weights, command="export")  # fmt: skip
    else:
        raise SystemExit("gankd export: give --checkpoint (a run) or --model (a zoo name, with --weights)")
    _write_json(export_onnx(model, example_inputs(model, 2, arguments.size), arguments.out), None)


def _train(arguments: argparse.Namespace) -> None:
    from gankd.config import ConfigError, load_config
    from gankd.train import resumed_config, train

    path = _config_path(arguments.config)
    # --resume continues the run with its recorded config (the overrides it started with included).
    config = resumed_config(path, arguments.set) if arguments.resume else load_config(path, arguments.set)
    if arguments.command == "distill" and config.mode != "distill":
        raise ConfigError(f"distilling needs a config with mode: distill, {arguments.config} has {config.mode!r}: "
                          "run it with gankd train")  # fmt: skip
    if arguments.command == "train" and config.mode == "distill":
        raise ConfigError(f"{arguments.config} is a distillation config: run it with gankd distill")
    result = train(config, resume=arguments.resume)  # errors: one line each, from main()
    if result:
        print(_summary(result["metrics"]))


def _config_path(text: str):
    """A YAML file, or the name of a shipped config (gankd.configs.names())."""
    from pathlib import Path

    from gankd import configs
    from gankd.config import ConfigError

    if Path(text).is_file() or text.endswith((".yaml", ".yml")):
        return Path(text)
    try:
        return configs.path(text)
    except ValueError as error:
        raise ConfigError(f"{text!r} is neither a config file nor a shipped config name ({error})") from None


def _demo(arguments: argparse.Namespace) -> None:
    from gankd.config import ConfigError
    from gankd.train import CheckpointError, TrainingError
    from gankd.train.demo import run_demo

    try:
        run_demo(arguments.output_dir, arguments.set)
    except (ConfigError, CheckpointError, TrainingError) as error:
        raise SystemExit(f"gankd demo: {error}") from None


def _summary(values: dict) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


def _add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("config", help=f"a YAML run config, or a shipped config's name, e.g. {example}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. --set steps=200 (repeatable)")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `gankd` console script."""
    from gankd import __version__

    parser = argparse.ArgumentParser(prog="gankd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gankd {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show its full traceback")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser(
        "models", help="list the model zoo with params and MACs at default sizes",
        description="Prints every registered model at its teacher and student setting: options, input, params and "
        "MACs (counted on the meta device: nothing is computed).",
    )  # fmt: skip
    models.set_defaults(run=_models)
    for name, text in (("train", "train a teacher or a scratch student from a YAML config"),
                       ("distill", "distil a student from a trained teacher, from a YAML config")):  # fmt: skip
        command = commands.add_parser(name, help=text, description=text)
        _add_run_arguments(command, "digits_cnn_distill" if name == "distill" else "digits_cnn_teacher")
        command.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval",
        help="metrics of a model on a data set, or of an image folder against another",
        description="Writes a metrics JSON. Standard fid/kid need Inception weights on disk ($GANKD_INCEPTION_WEIGHTS "
        "or the torch hub cache); fd_digits/kid_digits are offline proxies comparable only with each other.",
    )
    evaluate.add_argument("--checkpoint", help="a gankd run directory or checkpoint (its model, data and teacher)")
    evaluate.add_argument("--generated", help="folder of generated images (compared with --reference as sets: "
                          "fid, kid, fd_digits, kid_digits)")  # fmt: skip
    evaluate.add_argument("--reference", help="folder of reference images")
    evaluate.add_argument("--resize", type=_positive_int, metavar="SIZE",
                          help="resize generated and reference images to SIZE x SIZE (sizes must agree)")  # fmt: skip
    evaluate.add_argument("--model", help="zoo name of the model to evaluate (see `gankd models`)")
    evaluate.add_argument("--set", type=_option, action="append", default=[], metavar="KEY=VALUE",
                          help="a model option, e.g. --set ngf=16 (repeatable)")  # fmt: skip
    evaluate.add_argument("--weights", help="weights file of the model (torch.save of model.state_dict(), or another "
                          "project's file with --weights-format)")  # fmt: skip
    evaluate.add_argument("--weights-format", default="gankd", help=WEIGHTS_FORMAT_HELP)
    evaluate.add_argument("--random-weights", action="store_true",
                          help="evaluate --model (and --teacher-model) randomly initialised")  # fmt: skip
    evaluate.add_argument("--teacher-model", help="zoo name of a teacher, for classifier agreement")
    evaluate.add_argument("--teacher-set", type=_option, action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--teacher-weights")
    evaluate.add_argument("--teacher-weights-format", default="gankd", help=WEIGHTS_FORMAT_HELP)
    evaluate.add_argument("--data", help="data set name (see gankd.data.names())")
    evaluate.add_argument("--data-set", type=_option, action="append", default=[], metavar="KEY=VALUE",
                          help="a data set option, e.g. --data-set root=photos/ (repeatable); with --checkpoint it "
                          "replaces that one of the run's options and keeps the others")  # fmt: skip
    evaluate.add_argument("--split", choices=["train", "test"],
                          help="default: the run's eval.split with --checkpoint, else test")  # fmt: skip
    evaluate.add_argument("--task", help="a gankd.tasks name (default: the run's, or told from the model and data)")
    evaluate.add_argument("--metrics", help="comma-separated metric names (default: the run's eval.metrics with "
                          "--checkpoint, else the task's usual ones)")  # fmt: skip
    evaluate.add_argument("--inception-weights", help="local Inception weights for standard fid/kid")
    evaluate.add_argument("--lpips-net", help="the lpips metric's backbone, alex or vgg (default: the run's "
                          "eval.lpips_net, else alex)")  # fmt: skip
    evaluate.add_argument("--lpips-weights", help="local weights of that backbone (torchvision's file)")
    evaluate.add_argument("--speed", action="store_true",
                          help="also params, MACs and latency at batch 1 and 64 on the data's first item")  # fmt: skip
    evaluate.add_argument("--out", help="JSON file to write (default: print)")
    evaluate.set_defaults(run=_eval)

    generate = commands.add_parser(
        "generate", help="write a run's generated or translated images, or its reference images, to a folder",
        description="Writes PNG files into a new folder: --count samples of a generator run (in class sub-folders "
        "0/, 1/, ... when it is conditional), an image-to-image run's outputs for every image under --inputs (same "
        "relative paths), or with --reference the run's evaluation images (targets of an image-to-image run). The "
        "folders are what `gankd eval --generated ... --reference ...` compares.",
    )  # fmt: skip
    generate.add_argument("--checkpoint", required=True, help="a gankd run directory or checkpoint")
    generate.add_argument("--out", required=True, help="the folder to write (new or empty)")
    generate.add_argument("--count", type=int, help="how many samples a generator draws (with --reference: at most "
                          "this many of the run's images; default all)")  # fmt: skip
    generate.add_argument("--inputs", help="folder of input images for an image-to-image run: flat, or in sub-folders "
                          "(not both), all coming out one size (see --inputs-set load_size, crop_size)")  # fmt: skip
    generate.add_argument("--inputs-set", type=_option, action="append", default=[], metavar="KEY=VALUE",
                          help="an image_folder option of --inputs, e.g. load_size=256 (repeatable)")  # fmt: skip
    generate.add_argument("--paired", action="store_true",
                          help="--inputs holds pairs, as a paired_folder run's data (A/ + B/, or side-by-side AB "
                          "images): translate each pair's input side, in the run's direction")  # fmt: skip
    generate.add_argument("--reference", action="store_true", help="write the run's evaluation images instead")
    generate.add_argument("--batch-size", type=int, default=64)
    generate.add_argument("--seed", type=int, default=0, help="seed of a generator's noise (default 0)")
    generate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    generate.set_defaults(run=_generate)

    export = commands.add_parser(
        "export", help="export a model to ONNX and check it with onnxruntime",
        description="Exports a run's trained model (--checkpoint) or a zoo model with its weights file (--model, "
        "--weights) with torch.export to ONNX, compares onnxruntime's outputs with PyTorch's and prints the "
        "difference and CPU latency as JSON. Weights over protobuf's 2 GiB limit go to an OUT.data file beside OUT.",
    )  # fmt: skip
    export.add_argument("--checkpoint", help="a gankd run directory or checkpoint")
    export.add_argument("--model", help="zoo name (see `gankd models`), with --weights")
    export.add_argument("--set", type=_option, action="append", default=[], metavar="KEY=VALUE")
    export.add_argument("--weights", help="weights file of the model")
    export.add_argument("--weights-format", default="gankd", help=WEIGHTS_FORMAT_HELP)
    export.add_argument(
        "--random-weights", action="store_true", help="export --model without --weights, as initialised"
    )
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--size", type=int, help="the image side the ONNX model takes (an image-to-image zoo "
                        "generator's output side; fixed in the file, the batch stays free); default the model's, "
                        "shown as input_shapes")  # fmt: skip
    export.set_defaults(run=_export)

    demo = commands.add_parser("demo", help="distil a digits generator end to end (teacher, student, scratch, table)",
                               description="Teacher (cached), distilled student, scratch student, evaluated and "
                               "compared; about 5-10 minutes on 2 CPU cores, no downloads.")  # fmt: skip
    demo.add_argument("--output-dir", default="runs", help="where the demo's run directory goes (default runs/)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override every run's config, e.g. --set steps=50 for a quick look")  # fmt: skip
    demo.set_defaults(run=_demo)

    arguments = parser.parse_args(argv)
    try:
        arguments.run(arguments)
    except SystemExit as error:
        if not isinstance(error.code, str):
            raise
        _fail(arguments.command, error.code, error)
    except _user_errors() as error:
        if arguments.debug:
            raise
        _fail(arguments.command, _message(error), error)
    except KeyboardInterrupt:  # before or after training (inside it, the loop stops at a step boundary)
        if arguments.debug:
            raise
        import sys

        print(f"gankd {arguments.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


class CommandError(SystemExit):
    """A user error of a gankd command: printed as one line `gankd <command>: error: <message>`, exit status 2."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input can cause (a bad config, file, folder, option or weights file); anything else is a
    bug of gankd's and keeps its traceback."""
    import yaml

    from gankd.checkpoints import CheckpointError
    from gankd.train.loop import TrainingError

    return ValueError, TypeError, OSError, ImportError, yaml.YAMLError, CheckpointError, TrainingError


def _message(error: BaseException) -> str:
    """The error's message; an operating-system error as 'PATH: what went wrong' (not '[Errno 17] ...')."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {error.strerror}"
    return str(error) or type(error).__name__


def _fail(command: str, message: str, cause: BaseException) -> None:
    """Print `message` as `gankd <command>: error: ...` on stderr (whatever prefix it had) and exit with 2."""
    import re
    import sys

    text = " ".join(message.split())  # one line
    text = re.sub(rf"^gankd( {re.escape(command)})?:\s*(error:\s*)?", "", text)
    line = f"gankd {command}: error: {text}"
    print(line, file=sys.stderr)
    raise CommandError(line) from cause


if __name__ == "__main__":
    main()
