"""Start a narrow student from its teacher: the teacher, structurally pruned to the student's widths.

GAN Compression initialises its student by copying the teacher's filters with the largest L1 norms; CAT and
CAGC prune the teacher. `init_from_teacher` does the latter with torch-pruning's DependencyGraph, which
traces one forward of the teacher and couples every layer whose channels must be removed together: the
producer's output channels, its norm, the consumers' input channels, through residual additions,
concatenations (U-Net skips), transposed convolutions and embeddings. Each coupled set of channels (a
"group") keeps the channels of the largest group L1 importance: for channel c, the mean over the group's
convolutions, linear layers and batch norms of the L1 norm of that channel's slice (a producer's output
filter, a consumer's input slice, a batch norm's |scale|): GAN Compression's filter L1 norm, also weighing how
strongly the next layers read each channel. All groups are scored on the unpruned teacher, then pruned.

The pruned layers then see fewer inputs, and their outputs drift: a super-resolution teacher pruned from 32 to
7 channels had every ReLU of its up-path at zero, so its residual output was 0 and stayed 0 in training (dead
ReLUs get no gradient), even with the removed channels' mean contributions moved into the biases. So after
pruning, every biased conv/linear layer and affine batch norm is recalibrated per output channel on the example
inputs, in forward order (each seeing the recalibrated layers before it): a hidden layer's channel gets the mean
and standard deviation that the same channel has in the teacher, so its activation fires about as often as the
teacher's; the output layer (the last conv or linear layer to run, if it has a bias) gets the least-squares fit
a·z + b to the teacher's outputs, so a student whose outputs cannot follow the teacher's yet starts at the teacher's
mean output instead of at amplified noise. A conv or linear layer gets this through its weight rows and bias; a
batch norm through its running statistics, its scale and shift untouched (in training it normalises with batch
statistics, which would undo them: scaled batch-norm weights cost the 10-label classifier about 10 points of
accuracy). A layer whose outputs already have the teacher's statistics (upstream of every pruned layer, or nothing
pruned) is left as it is. This is bias correction and statistics recalibration as in post-training quantization and
EagleEye's adaptive batch norm. Measured on the 4x super-resolution student (ngf 32 -> 7, two seeds): 33.45 and
33.38 dB after training with the least-squares output layer, 33.40 and 33.36 with the output layer left as pruned,
33.37 and 33.08 with it moment-matched like the hidden layers.

torch-pruning 1.6 handles every zoo family: dcgan_g (conditional too: its embedding only widens the stem's
input, which is never pruned), resnet_g (the residual stream is one group), small_cnn, cifar_resnet (shortcut
convs coupled with the block outputs), unet_g (skip concatenations map indices across the concat) and
torchvision ResNets (e.g. wide_resnet50_2 → resnet50). It cannot prune parametrized weights (spectral norm:
the pruned weight cannot be assigned over the parametrization), so those models are refused.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.utils import parametrize

from gankd.models.cost import example_inputs as default_example_inputs

# Layers whose output channels root a pruning group; norms, activations and pads follow their producer.
_ROOT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def init_from_teacher(
    student: nn.Module, teacher: nn.Module, example_inputs: tuple[Tensor, ...] | None = None
) -> dict[str, Any]:
    """Load into `student` the `teacher` pruned to the student's widths (torch-pruning, group L1 magnitude).

    The teacher is left untouched: a deep copy (CPU, eval mode) is traced with `example_inputs` (default
    `gankd.models.example_inputs(teacher, batch_size=4)`; keep them small, e.g. 64×64 for torchvision
    models), then every group rooted at a Conv2d, ConvTranspose2d or Linear whose output channels outnumber those of the
    student's layer at the same module path loses its lowest-importance channels (see the module docstring)
    down to the student's count; groups already at the student's count stay whole. The pruned state dict
    must then match the student's key for key and shape for shape, and is loaded with `strict=True`.

    Args:
        student: the teacher's architecture at an equal or smaller width (e.g. `build("dcgan_g", ngf=16)`
            for a `build("dcgan_g", ngf=64)` teacher); its weights are overwritten.
        teacher: the trained wide model.
        example_inputs: the positional inputs of one teacher forward (any device; moved to CPU).

    Returns:
        A plain-data report: {"groups_pruned": groups that lost channels, "groups_unchanged": groups left
        whole, "params_teacher": ..., "params_student": ..., "layers_recalibrated": layers whose outputs were
        recalibrated (see the module docstring), "kept": {root layer path: sorted teacher channel indices
        kept}} — `kept` lists the pruned groups only.

    Raises:
        ValueError: the two are not one architecture (state-dict keys differ), a student layer is wider than
            the teacher's, a weight is parametrized (spectral norm), or shapes still differ after pruning.
        ImportError: torch-pruning is not installed.
    """
    try:
        import torch_pruning as tp
    except ImportError as error:
        raise ImportError("init_from_teacher needs torch-pruning: pip install 'torch-pruning>=1.6'") from error
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise TypeError(
            f"student and teacher must be torch.nn.Modules, got {type(student).__name__} and {type(teacher).__name__}"
        )
    _check_not_parametrized(teacher, "teacher")
    _check_not_parametrized(student, "student")
    student_shapes = _tensor_shapes(student)
    _check_same_architecture(student_shapes, _tensor_shapes(teacher))
    _check_same_layers(student, teacher)

    if example_inputs is None:
        example_inputs = default_example_inputs(teacher, batch_size=4)
    elif isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(value.cpu() if isinstance(value, Tensor) else value for value in example_inputs)

    # Trace a CPU eval-mode copy: the DependencyGraph reads the autograd graph of one forward, which needs
    # grad mode and parameters that require grad (a frozen teacher's do not).
    pruned = copy.deepcopy(teacher).cpu().eval()
    for parameter in pruned.parameters():
        parameter.requires_grad_(True)
    teacher_outputs = _TeacherOutputs(pruned, example_inputs)
    try:
        report = _prune(tp, pruned, student, student_shapes, example_inputs, teacher_outputs)
    except (IndexError, KeyError, RuntimeError, AssertionError, NotImplementedError) as error:
        # torch-pruning's dependency graph does not know every op (e.g. PixelShuffle mixes channels into pixels).
        message = str(error).strip().splitlines()[-1] if str(error).strip() else "no message"
        raise ValueError(
            f"torch-pruning cannot prune the teacher {type(teacher).__name__} ({type(error).__name__}: {message}); "
            "an op it does not handle (such as PixelShuffle) is the likely cause: use student_init: random"
        ) from error
    _check_same_output_shapes(pruned, teacher_outputs.output_shapes, example_inputs)
    student.load_state_dict(pruned.state_dict(), strict=True)
    return {
        **report,
        "params_teacher": sum(parameter.numel() for parameter in teacher.parameters()),
        "params_student": sum(parameter.numel() for parameter in student.parameters()),
    }


def _prune(tp, pruned: nn.Module, student: nn.Module, student_shapes: dict[str, tuple[int, ...]],
           example_inputs: tuple, teacher_outputs: _TeacherOutputs) -> dict[str, Any]:  # fmt: skip
    """Prune `pruned` (the teacher's copy) in place to the student's widths and recalibrate it; the report's
    groups_pruned, groups_unchanged, layers_recalibrated and kept (see init_from_teacher)."""
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example_inputs, verbose=False)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    paths = {module: path for path, module in pruned.named_modules()}

    # Score every group on the unpruned teacher first, so that no group's choice depends on which coupled
    # layers another group pruned before it; then prune. A layer's output channels belong to one group only,
    # so each root's channel indices stay valid while the other groups are pruned.
    kept: dict[str, list[int]] = {}
    plans = []
    unchanged = 0
    with torch.no_grad():
        for group in graph.get_all_groups(root_module_types=_ROOT_TYPES):
            root = group[0].dep.target.module
            path = paths[root]
            teacher_channels = graph.get_out_channels(root)
            student_channels = _out_channels(student.get_submodule(path))
            if student_channels > teacher_channels:
                raise ValueError(
                    f"student layer {path} has {student_channels} output channels, more than the teacher's "
                    f"{teacher_channels}: the student must be the teacher's architecture at a smaller width"
                )
            if student_channels == teacher_channels:
                unchanged += 1
                continue
            # Keep the student's count of highest-importance channels (stable order for ties), prune the rest.
            order = torch.argsort(importance(group), descending=True, stable=True)
            kept[path] = sorted(order[:student_channels].tolist())
            plans.append((root, group[0].dep.handler, sorted(order[student_channels:].tolist())))
        groups = [graph.get_pruning_group(root, pruning_fn, pruned_channels)
                  for root, pruning_fn, pruned_channels in plans]  # fmt: skip
        kept_outputs = _kept_outputs(graph, groups, teacher_outputs.statistics)
        for group in groups:
            group.prune()
        for path, module in pruned.named_modules():  # a norm without weights is left at the teacher's count
            if isinstance(module, _InstanceNorm):
                module.num_features = student.get_submodule(path).num_features
        _check_pruned_shapes(pruned, student_shapes)  # before any forward of the pruned copy
        recalibrated = _recalibrate(pruned, example_inputs, teacher_outputs, kept_outputs) if groups else 0
    return {"groups_pruned": len(kept), "groups_unchanged": unchanged, "layers_recalibrated": recalibrated,
            "kept": kept}  # fmt: skip


def _recalibrated(module: nn.Module) -> bool:
    """Layers whose outputs can be moved per channel by their own parameters or buffers: biased convs and
    linears (weight rows and bias) and affine batch norms with running statistics (those statistics)."""
    if isinstance(module, _ROOT_TYPES):
        return module.bias is not None
    return isinstance(module, _BatchNorm) and module.affine and module.running_var is not None


def _channel_dim(module: nn.Module, output: Tensor) -> int:
    return output.dim() - 1 if isinstance(module, nn.Linear) else 1


def _channels_first(module: nn.Module, output: Tensor) -> Tensor:
    """`output` as float64 [channels, everything else]."""
    return output.detach().double().movedim(_channel_dim(module, output), 0).flatten(1)


def _mean_and_std(values: Tensor) -> tuple[Tensor, Tensor]:
    return values.mean(1), values.std(1, unbiased=False)


class _TeacherOutputs:
    """One forward of the unpruned teacher on the example inputs: each recalibrated layer's per-channel output
    (mean, std) from its first call, and `last`, the output layer, with its output: the layer called first
    last, if it is a biased conv or linear layer (a bias-free last conv, as DCGAN's, or a final batch norm
    leaves None: every layer is then a hidden one)."""

    def __init__(self, model: nn.Module, example_inputs: tuple):
        self.statistics: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        self.output_shapes: Any = None  # the model's output shapes without the batch dimension (_shapes)
        self.last, self.last_output = None, None
        seen = set()

        def record(module, inputs, output):
            if module in seen or not isinstance(output, Tensor):
                return
            seen.add(module)
            self.last, self.last_output = None, None  # until a biased conv or linear layer is the last to run
            if not _recalibrated(module):
                return
            values = _channels_first(module, output)
            self.statistics[module] = _mean_and_std(values)
            if isinstance(module, _ROOT_TYPES):
                self.last, self.last_output = module, values

        output = _forward_with_hook(model, example_inputs, record, lambda module: isinstance(module, _ROOT_TYPES))
        self.output_shapes = _shapes(output)


def _forward_with_hook(model: nn.Module, example_inputs: tuple, hook, also=lambda module: False) -> Any:
    """One no-grad forward with `hook` on every recalibrated layer (and those `also` picks); its output."""
    modules = [module for module in model.modules() if _recalibrated(module) or also(module)]
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        with torch.no_grad():
            return model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()


def _shapes(output: Any) -> Any:
    """A model output's shapes without the batch dimension: a tuple for a tensor, a list of those for a tuple
    or list of outputs, None for anything else."""
    if isinstance(output, Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, (tuple, list)):
        return [_shapes(part) for part in output]
    return None


# Items of the example inputs the pruned copy runs on to compare its output shapes with the teacher's.
SHAPE_CHECK_ITEMS = 2


def _check_same_output_shapes(pruned: nn.Module, teacher_shapes: Any, example_inputs: tuple) -> None:
    """Pruning removes hidden channels only: a student whose outputs differ from the teacher's (fewer classes or
    image channels) would silently get a subset of the teacher's outputs, so it is refused. `pruned` is the
    teacher's copy pruned to the student's widths (eval mode)."""
    few = tuple(value[:SHAPE_CHECK_ITEMS] if isinstance(value, Tensor) and value.dim() else value
                for value in example_inputs)  # fmt: skip
    with torch.no_grad():
        student_shapes = _shapes(pruned(*few))
    if student_shapes != teacher_shapes:
        raise ValueError(
            f"the student's output is {student_shapes} but the teacher's {teacher_shapes} (per item): pruning "
            "removes hidden channels only, so build the student with the teacher's outputs (the same num_classes, "
            "out_channels, image size)"
        )


def _kept_outputs(graph, groups: list, statistics: dict) -> dict[nn.Module, Tensor]:
    """{layer: the teacher output channels it keeps} for the recalibrated layers that lose output channels."""
    kept = {}
    for group in groups:
        for item in group:
            module = item.dep.target.module
            if module in statistics and graph.is_out_channel_pruning_fn(item.dep.handler):
                removed = {int(getattr(index, "idx", index)) for index in item.idxs}
                channels = statistics[module][0].numel()
                kept[module] = torch.tensor([c for c in range(channels) if c not in removed], dtype=torch.long)
    return kept


def _recalibrate(model: nn.Module, example_inputs: tuple, teacher: _TeacherOutputs, kept: dict) -> int:
    """Recalibrate the pruned `model`'s layers in one forward (see the module docstring); returns how many
    changed. Each hook sets its layer's parameters and passes on the output they now give, so the layers
    after it are recalibrated on the corrected inputs."""
    done, changed = set(), []

    def recalibrate(module, inputs, output):
        if module in done or module not in teacher.statistics or not isinstance(output, Tensor):
            return None
        done.add(module)
        channels = kept.get(module)
        target_mean, target_std = (value if channels is None else value[channels]
                                   for value in teacher.statistics[module])  # fmt: skip
        values = _channels_first(module, output)
        mean, std = _mean_and_std(values)
        if torch.equal(mean, target_mean) and torch.equal(std, target_std):
            return None
        if module is teacher.last:  # least squares: a = cov(z, t) / var(z), b = mean(t) - a mean(z)
            target = teacher.last_output if channels is None else teacher.last_output[channels]
            covariance = ((values - mean[:, None]) * (target - target_mean[:, None])).mean(1)
            scale = torch.where(std > 0, covariance / std.square().clamp_min(torch.finfo(std.dtype).tiny), 0.0)
        else:
            scale = torch.where(std > 0, target_std / std.clamp_min(torch.finfo(std.dtype).tiny), 1.0)
        shift = target_mean - scale * mean
        scale, shift = _scale_and_shift(module, scale, shift)
        changed.append(module)
        shape = [1] * output.dim()
        shape[_channel_dim(module, output)] = -1
        return output * scale.to(output.dtype).view(shape) + shift.to(output.dtype).view(shape)

    _forward_with_hook(model, example_inputs, recalibrate)
    return len(changed)


def _scale_and_shift(module: nn.Module, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Make `module`'s eval-mode output a·z + b per output channel; returns the (a, b) set.

    A conv or linear layer: its weight rows times a, its bias a·bias + b. A batch norm keeps its scale and
    shift (in training it normalises with batch statistics and would undo new ones) and takes new running
    statistics instead: with s = sqrt(running_var + eps), s' = s / a and mean' = mean + s'((1 - a)·shift - b)
    / scale. Its channels where that cannot hold (a ≤ 0, scale 0) keep their statistics (a = 1, b = 0)."""
    if isinstance(module, _BatchNorm):
        gamma, beta = module.weight.double(), module.bias.double()
        feasible = (scale > 0) & (gamma != 0)
        scale, shift = torch.where(feasible, scale, 1.0), torch.where(feasible, shift, 0.0)
        new_std = (module.running_var.double() + module.eps).sqrt() / scale
        new_mean = module.running_mean.double() + new_std * ((1 - scale) * beta - shift) / gamma.where(feasible, 1.0)
        module.running_mean.copy_(new_mean)
        module.running_var.copy_((new_std.square() - module.eps).clamp_min(0))
        return scale, shift
    weight = module.weight
    typed_scale, typed_shift = scale.to(weight.dtype), shift.to(weight.dtype)
    if isinstance(module, nn.ConvTranspose2d):  # [in, out / groups, k, k]: output channels on dim 1 per group
        groups = module.groups
        view = weight.unflatten(0, (groups, -1))
        view *= typed_scale.view(groups, 1, -1, *([1] * (weight.dim() - 2)))
    else:  # Conv2d [out, in, k, k], Linear [out, in]
        weight *= typed_scale.view(-1, *([1] * (weight.dim() - 1)))
    module.bias.mul_(typed_scale).add_(typed_shift)
    return scale, shift


def _tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items() if isinstance(value, Tensor)}


def _out_channels(layer: nn.Module) -> int:
    # ConvTranspose2d stores its weight as [in, out / groups, k, k]; its out_channels attribute is the count.
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _check_pruned_shapes(pruned: nn.Module, student_shapes: dict[str, tuple[int, ...]]) -> None:
    state_dict = pruned.state_dict()
    for key, shape in student_shapes.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"after pruning the teacher, {key} is {tuple(state_dict[key].shape)} but the student's is {shape}: "
                "that layer's width is not set by any prunable conv/linear output of the teacher (or its output "
                "never reaches the model's output, so the dependency graph cannot see it); build the student with "
                "the teacher's options except the width (ngf/width)"
            )


def _check_not_parametrized(model: nn.Module, role: str) -> None:
    for path, module in model.named_modules():
        # torch.nn.utils.spectral_norm (the hook-based API) keeps the weight as `weight_orig`
        if parametrize.is_parametrized(module) or "weight_orig" in module._parameters:
            raise ValueError(
                f"{role} layer {path or '(root)'} has parametrized weights (e.g. spectral norm), which torch-pruning "
                "cannot prune: build teacher and student without spectral_norm (remove it from the teacher with "
                "torch.nn.utils.parametrize.remove_parametrizations, or remove_spectral_norm for the hook-based API), "
                "initialize, then apply spectral norm"
            )


def _check_same_architecture(student_shapes: dict[str, tuple[int, ...]], teacher_shapes: dict[str, tuple[int, ...]]):
    only_student = sorted(set(student_shapes) - set(teacher_shapes))
    only_teacher = sorted(set(teacher_shapes) - set(student_shapes))
    mismatched = [key for key in student_shapes if key in teacher_shapes and
                  len(student_shapes[key]) != len(teacher_shapes[key])]  # fmt: skip
    if only_student or only_teacher or mismatched:
        differing = ", ".join(
            [f"{key} (student only)" for key in only_student[:3]]
            + [f"{key} (teacher only)" for key in only_teacher[:3]]
            + [f"{key} (rank differs)" for key in mismatched[:3]]
        )
        raise ValueError(
            f"student and teacher are not the same architecture: their state dicts differ ({differing}); "
            "student_init: teacher needs the teacher's architecture at a smaller width"
        )
    for key, shape in student_shapes.items():
        if any(size > teacher_size for size, teacher_size in zip(shape, teacher_shapes[key], strict=True)):
            raise ValueError(
                f"student {key} is {shape}, wider than the teacher's {teacher_shapes[key]}: the student must be "
                "the teacher's architecture at an equal or smaller width"
            )


# Layers that do nothing in eval mode: a teacher with dropout prunes into a student without (pix2pix's U-Net).
_NO_OPS_IN_EVAL = {"absent", "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                   "FeatureAlphaDropout"}  # fmt: skip


def _check_same_layers(student: nn.Module, teacher: nn.Module) -> None:
    """The same layer types at the same paths (a norm of one kind in one and of another, or none, in the
    other holds the same keys when it has no weights) and the same input convention."""
    student_layers, teacher_layers = dict(student.named_modules()), dict(teacher.named_modules())
    for path in sorted(set(student_layers) | set(teacher_layers)):
        ours, theirs = (type(layers[path]).__name__ if path in layers else "absent"
                        for layers in (student_layers, teacher_layers))  # fmt: skip
        if ours != theirs and not {ours, theirs} <= _NO_OPS_IN_EVAL:
            raise ValueError(
                f"student layer {path or '(root)'} is {ours} but the teacher's is {theirs}: student_init: teacher "
                "needs the teacher's architecture at a smaller width (the same norm and other options)"
            )
    conventions = [
        getattr(model, "input_convention", None) or "none (images in [-1, 1])" for model in (student, teacher)
    ]
    if conventions[0] != conventions[1]:
        raise ValueError(
            f"the student's input convention is {conventions[0]} but the teacher's {conventions[1]}: a student "
            "pruned from its teacher reads its inputs as the teacher does; give it the teacher's (model.input)"
        )
