"""Which zoo model, with which options, an official-layout state dict holds: read off its keys and shapes, so
that a file that does not fit the model it was loaded into can say what to build instead.

Each reader returns (zoo model name, options) or None when the keys are not that project's layout. Options
the file cannot tell (a U-Net's dropout has no weights) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

Architecture = tuple[str, dict[str, object]]


def describe(architecture: Architecture | None) -> str:
    """'resnet_g(ngf=8, n_blocks=9, ...)', or '' for None."""
    if architecture is None:
        return ""
    name, options = architecture
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in options.items())})"


def cyclegan_architecture(state: Mapping[str, Tensor]) -> Architecture | None:
    """A pytorch-CycleGAN-and-pix2pix ResnetGenerator, UnetGenerator or NLayerDiscriminator state dict's
    zoo model and options."""
    keys = [key for key in state if isinstance(key, str)]
    try:
        if any(".conv_block." in key for key in keys):
            return _resnet(state, keys)
        if any(key.startswith("model.model.") for key in keys):
            return _unet(state, keys)
        if "model.0.weight" in state:
            return _patchgan(state)
    except (KeyError, AttributeError, IndexError, ValueError):  # a damaged file: no description
        return None
    return None


def dcgan_example_architecture(state: Mapping[str, Tensor]) -> Architecture | None:
    """The PyTorch examples DCGAN netG / netD state dict's zoo model and options (`main.N` keys)."""
    try:
        return _dcgan(state)
    except (KeyError, AttributeError, IndexError, ValueError):
        return None


def _conv_indices(state: Mapping[str, Tensor], sequential: str) -> list[int]:
    # Sorted indices N of the 4-d `{sequential}.N.weight` tensors: the convs of an nn.Sequential.
    pattern = re.compile(rf"{re.escape(sequential)}\.(\d+)\.weight")
    return sorted(int(match[1]) for key, value in state.items()
                  if isinstance(key, str) and (match := pattern.fullmatch(key)) and value.dim() == 4)  # fmt: skip


def _dcgan(state: Mapping[str, Tensor]) -> Architecture | None:
    convs = _conv_indices(state, "main")
    if len(convs) < 2:
        return None
    first, last = state[f"main.{convs[0]}.weight"], state[f"main.{convs[-1]}.weight"]
    image_size = 4 * 2 ** (len(convs) - 1)
    if "main.1.weight" in state:  # netG: ConvTranspose2d [in, out, k, k], its first one followed by batch norm
        return "dcgan_g", {"image_size": image_size, "nz": first.shape[0], "ngf": last.shape[0],
                           "channels": last.shape[1]}  # fmt: skip
    return "dcgan_d", {"image_size": image_size, "channels": first.shape[1], "ndf": first.shape[0]}


def _norm(state: Mapping[str, Tensor], norm_key: str, conv_key: str) -> str:
    # Official layouts: batch norm keeps affine weights; instance norm keeps none, and its convs carry the bias
    # that the other norms' convs lack.
    if f"{norm_key}.weight" in state:
        return "batch"
    return "instance" if f"{conv_key}.bias" in state else "none"


def _resnet(state: Mapping[str, Tensor], keys: list[str]) -> Architecture:
    # model: pad, conv 7x7 (1), norm (2), ... blocks model.10 ... model.{9+n}, ..., the last conv model.{17+n}.
    blocks = {int(key.split(".")[1]) for key in keys if ".conv_block." in key}
    n_blocks = len(blocks)
    stem, last = state["model.1.weight"], state.get(f"model.{17 + n_blocks}.weight")
    options = {"in_channels": stem.shape[1], "out_channels": None if last is None else last.shape[0],
               "ngf": stem.shape[0], "n_blocks": n_blocks, "norm": _norm(state, "model.2", "model.4"),
               "dropout": _dropout_blocks(state, blocks)}  # fmt: skip
    return "resnet_g", {key: value for key, value in options.items() if value is not None}


def _dropout_blocks(state: Mapping[str, Tensor], blocks: set[int]) -> bool:
    # A block's second conv is conv_block.5, or conv_block.6 behind a Dropout (where batch norm has its norm).
    key = f"model.{min(blocks)}.conv_block.6.weight"
    return key in state and state[key].dim() == 4


def _unet(state: Mapping[str, Tensor], keys: list[str]) -> Architecture:
    # Level 0 is model.model.; level i >= 1 is model.model.1. then `model.3.` (i - 1) times, then model.N.
    levels = [0]
    for key in keys:
        parts = key.split(".")
        if parts[:3] == ["model", "model", "1"] and len(parts) > 5:
            levels.append(1 + (len(parts) - 6) // 2)
    outer_down, outer_up = state["model.model.0.weight"], state["model.model.3.weight"]
    inner = "model.model.1.model."
    options = {"in_channels": outer_down.shape[1], "out_channels": outer_up.shape[1], "num_downs": max(levels) + 1,
               "ngf": outer_down.shape[0], "norm": _norm(state, f"{inner}2", f"{inner}1")}  # fmt: skip
    return "unet_g", options


def _patchgan(state: Mapping[str, Tensor]) -> Architecture:
    # model.0 stem conv, block k's conv and norm at model.{2+3k}, model.{3+3k}, the head conv at model.{2+3n}.
    indices = _conv_indices(state, "model")
    stem = state["model.0.weight"]
    options = {"in_channels": stem.shape[1], "ndf": stem.shape[0], "n_layers": (max(indices) - 2) // 3,
               "norm": _norm(state, "model.3", "model.2")}  # fmt: skip
    return "patchgan_d", options
