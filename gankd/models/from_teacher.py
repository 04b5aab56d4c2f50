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

A layer that loses input channels gets their mean contribution on the example inputs (each removed channel's
mean input times its weights) added to its bias, so its pre-activations keep their mean. Without this a
super-resolution teacher pruned from 32 to 7 channels had every activation after its last transposed
convolution below zero: a student whose residual output was 0 and stayed 0 in training (dead ReLUs).

torch-pruning 1.6 handles every zoo family: dcgan_g (conditional too: its embedding only widens the stem's
input, which is never pruned), resnet_g (the residual stream is one group), small_cnn, cifar_resnet (shortcut
convs coupled with the block outputs), unet_g (skip concatenations map indices across the concat) and
torchvision ResNets (e.g. wide_resnet50_2 → resnet50). It cannot prune parametrized weights (spectral norm:
the pruned weight cannot be assigned over the parametrization), so those models are refused.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn
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
        whole, "params_teacher": ..., "params_student": ..., "kept": {root layer path: sorted teacher
        channel indices kept}} — `kept` lists the pruned groups only.

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
    input_means = _input_means(pruned, example_inputs)
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
        for group in groups:
            _compensate_removed_inputs(graph, group, input_means)
        for group in groups:
            group.prune()

    state_dict = pruned.state_dict()
    for key, shape in student_shapes.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"after pruning the teacher, {key} is {tuple(state_dict[key].shape)} but the student's is {shape}: "
                "that layer's width is not set by any prunable conv/linear output of the teacher; build the "
                "student with the teacher's options except the width (ngf/width)"
            )
    student.load_state_dict(state_dict, strict=True)
    return {
        "groups_pruned": len(kept),
        "groups_unchanged": unchanged,
        "params_teacher": sum(parameter.numel() for parameter in teacher.parameters()),
        "params_student": sum(parameter.numel() for parameter in student.parameters()),
        "kept": kept,
    }


def _input_means(model: nn.Module, example_inputs: tuple) -> dict[nn.Module, Tensor]:
    """{conv/linear layer: the mean of its input per input channel} over one forward on `example_inputs`."""
    means = {}

    def record(module, inputs):
        value = inputs[0].detach().float()
        if isinstance(module, nn.Linear):
            means[module] = value.reshape(-1, value.shape[-1]).mean(0)
        else:
            means[module] = value.mean(dim=[0, *range(2, value.dim())])

    hooks = [module.register_forward_pre_hook(record) for module in model.modules() if isinstance(module, _ROOT_TYPES)]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return means


def _compensate_removed_inputs(graph, group, input_means: dict) -> None:
    """Before `group` is pruned: add to the bias of each layer that loses input channels what those channels
    contributed on average (their mean input times their weights), so its pre-activations keep their mean
    instead of sliding under a ReLU (seen: a 4x super-resolution teacher pruned from 32 to 7 channels had
    every activation after its last transposed convolution at zero)."""
    for item in group:
        module = item.dep.target.module
        if not (isinstance(module, _ROOT_TYPES) and module.bias is not None and module in input_means):
            continue
        if not graph.is_in_channel_pruning_fn(item.dep.handler) or getattr(module, "groups", 1) != 1:
            continue
        removed = torch.tensor([int(getattr(index, "idx", index)) for index in item.idxs], dtype=torch.long)
        means = input_means[module][removed].to(module.weight.dtype)
        if isinstance(module, nn.ConvTranspose2d):  # [in, out, k, k]; each output sees 1/stride² of the taps
            weights = module.weight[removed].sum(dim=(2, 3)) / math.prod(module.stride)
            module.bias += (means[:, None] * weights).sum(0)
        else:  # Conv2d [out, in, k, k], Linear [out, in]
            weights = (
                module.weight[:, removed].flatten(2).sum(2) if module.weight.dim() > 2 else module.weight[:, removed]
            )
            module.bias += (weights * means[None, :]).sum(1)


def _tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items() if isinstance(value, Tensor)}


def _out_channels(layer: nn.Module) -> int:
    # ConvTranspose2d stores its weight as [in, out / groups, k, k]; its out_channels attribute is the count.
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _check_not_parametrized(model: nn.Module, role: str) -> None:
    for path, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise ValueError(
                f"{role} layer {path or '(root)'} has parametrized weights (e.g. spectral norm), which torch-pruning "
                "cannot prune: build teacher and student without spectral_norm (remove it from the teacher with "
                "torch.nn.utils.parametrize.remove_parametrizations), initialize, then apply spectral norm"
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
