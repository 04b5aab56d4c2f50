"""Pretrained weights from other projects' files: read a local state dict, rename its keys to the zoo model's,
load it strictly.

    model = gankd.models.build("resnet_g", n_blocks=9, weights="latest_net_G.pth", weights_format="cyclegan")

Formats (`weights_formats()`; `register_weights_format` adds one's own):
    gankd          a gankd state dict, checkpoint file or run directory (its EMA weights when it kept them)
    cyclegan       pytorch-CycleGAN-and-pix2pix: ResnetGenerator → resnet_g, UnetGenerator → unet_g,
                   NLayerDiscriminator → patchgan_d (legacy instance-norm buffers are dropped, as its loader does)
    dcgan_example  the PyTorch examples DCGAN (`main.N` keys): netG → dcgan_g, netD → dcgan_d
    torchvision    torchvision's own keys (also a reference-script checkpoint {"model": state dict, ...})

Files are read with torch.load(weights_only=True), so they can never run code, and only from the local
path given: nothing is downloaded. Loading is strict: keys the model lacks or needs, and shapes that do not
fit, raise WeightsFormatError naming them in the file's own names, and, where the format can tell
(file_architectures.py), the zoo model and options the file holds. Where the official layout has no bias
and gankd's layer has one (convs without norm, the DCGAN discriminator's first and last convs), the bias
is set to zero, which computes the same function. The official DCGAN discriminator ends in a sigmoid;
dcgan_d returns its logits (sigmoid(dcgan_d(x)) is the official output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from gankd.checkpoints import CheckpointError, find_checkpoint, is_checkpoint, trained_weights
from gankd.models.discriminators import DCGANDiscriminator, PatchGANDiscriminator
from gankd.models.file_architectures import cyclegan_architecture, dcgan_example_architecture, describe
from gankd.models.generators import DCGANGenerator, ResnetGenerator
from gankd.models.unet import UnetGenerator
from gankd.registry import Registry


class WeightsFormatError(ValueError):
    """A weights file that cannot be read, or does not fit the model in the format named."""


class WeightsFormat:
    """How one project's files name a zoo model's weights. Subclasses set `describe` and override `rename`
    (a gankd module path → the file's module path) and, when the file has no bias for some of gankd's
    layers, `bias_free`; `read` may be overridden for files that are not a bare state dict."""

    name = ""
    describe = ""

    def read(self, path: Path) -> Mapping[str, Tensor]:
        """The state dict the file at `path` holds (a leading "module." of DataParallel/DDP is dropped)."""
        return _strip_module_prefix(_torch_load(path))

    def rename(self, model: nn.Module) -> Callable[[str], str]:
        """A function from a module path of `model` to the same module's path in the file."""
        return lambda path: path

    def bias_free(self, model: nn.Module) -> set[str]:
        """Module paths of `model` whose bias the file lacks (the official layer has none): set to zero."""
        return set()

    def architecture(self, state: Mapping[str, Tensor]) -> str:
        """The zoo model and options the file's keys and shapes show ('' where the format cannot tell)."""
        return ""

    def mismatch_hint(self, path: Path, state: Mapping[str, Tensor]) -> str:
        """What to check when the file's tensors have other shapes than the model's."""
        if found := self.architecture(state):
            return f"the file holds {found}: build the model with those options"
        return "check the model's width options (ngf, ndf, width, ...) against the file's"

    def convert(self, state: Mapping[str, Tensor], model: nn.Module, source: str) -> dict[str, Tensor]:
        """`state` with `model`'s key names; WeightsFormatError naming missing and unexpected keys."""
        rename, bias_free = self.rename(model), self.bias_free(model)
        modules = dict(model.named_modules())
        converted, missing, used, not_tensors = {}, [], set(), []
        for key, value in model.state_dict().items():
            module_path, _, leaf = key.rpartition(".")
            file_key = _join(rename(module_path), leaf)
            if leaf == "bias" and module_path in bias_free:
                # the official layer has no bias: a bias in the file means another architecture (left unexpected)
                converted[key] = torch.zeros_like(value, device="cpu")
            elif file_key in state:
                converted[key] = state[file_key]
                used.add(file_key)
                if not isinstance(state[file_key], Tensor):
                    not_tensors.append(f"{file_key} holds a {type(state[file_key]).__name__}")
            elif leaf == "num_batches_tracked" and isinstance(modules[module_path], nn.modules.batchnorm._BatchNorm):
                # files saved before PyTorch 0.4.1 (torchvision's first ImageNet weights) lack it; torch fills 0
                converted[key] = torch.zeros_like(value, device="cpu")
            else:
                missing.append(file_key)
        if not_tensors:
            raise WeightsFormatError(f"{source} is not a state dict of tensors: {_first(not_tensors)}")
        legacy = {  # instance norm buffers old PyTorch versions saved; they were never used
            _join(rename(path), leaf)
            for path, module in model.named_modules()
            if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats
            for leaf in ("running_mean", "running_var", "num_batches_tracked")
        }
        unexpected = [key for key in state if key not in used and key not in legacy]
        nested = [key for key in unexpected if isinstance(state[key], Mapping)]
        if missing and nested:
            raise WeightsFormatError(
                f"{source} is a checkpoint holding {_first(nested)}, not a state dict: save the entry with "
                f"{type(model).__name__}'s weights alone, e.g. torch.save(checkpoint[{nested[0]!r}], 'weights.pth')"
            )
        if missing or unexpected:
            found = self.architecture(state)
            raise WeightsFormatError(
                f"{source} does not fit {type(model).__name__} in the {self.name!r} format: "
                + "; ".join(
                    f"{what} {len(keys)} key{'s' * (len(keys) > 1)} ({_first(keys)})"
                    for what, keys in (("the file lacks", missing), ("the model has no place for", unexpected))
                    if keys
                )
                + (
                    f". The file holds {found}: build the model with those options"
                    if found
                    else ". Check the model's options (depth, blocks, norm, dropout) against the file's architecture"
                )
            )
        return converted


_FORMATS = Registry("weights format", WeightsFormat)


def register_weights_format(name: str):
    """Decorator that adds a WeightsFormat subclass under `name` (usable as `weights_format: name`)."""
    return _FORMATS.register(name)


def weights_formats() -> list[str]:
    """The registered weights format names, sorted."""
    return _FORMATS.names()


def load_weights(model: nn.Module, path: str | Path, weights_format: str = "gankd") -> nn.Module:
    """Load the file at `path`, written in `weights_format`, into `model` strictly; returns `model`."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise TypeError(f"weights must be a path (str or Path) to a local file, got {path!r}")
    fmt = _FORMATS.build(weights_format)
    path = Path(path)
    if not path.exists():
        raise WeightsFormatError(f"weights file {path} does not exist (gankd never downloads: give a local file)")
    source = f"weights file {path}"
    file_state = fmt.read(path)
    state = fmt.convert(file_state, model, source)
    expected = model.state_dict()
    differing = [f"{key} is {list(value.shape)} in the file and {list(expected[key].shape)} in the model"
                 for key, value in state.items() if value.shape != expected[key].shape]  # fmt: skip
    if differing:
        raise WeightsFormatError(
            f"{source} ({weights_format!r}) does not fit {type(model).__name__}: {len(differing)} of its "
            f"{len(state)} tensors have other shapes ({'; '.join(differing[:2])}{'; ...' * (len(differing) > 2)}): "
            f"{fmt.mismatch_hint(path, file_state)}"
        )
    model.load_state_dict(state)
    return model


@register_weights_format("gankd")
class GankdFormat(WeightsFormat):
    describe = "a gankd state dict, checkpoint file or run directory"

    def read(self, path: Path) -> Mapping[str, Tensor]:
        try:
            path = find_checkpoint(path)
        except CheckpointError as error:
            raise WeightsFormatError(str(error)) from None
        state = _torch_load(path)
        return _strip_module_prefix(trained_weights(state) if is_checkpoint(state) else state)

    def mismatch_hint(self, path: Path, state: Mapping[str, Tensor]) -> str:
        checkpoint = _torch_load(find_checkpoint(path))
        if not is_checkpoint(checkpoint):
            return super().mismatch_hint(path, state)
        model = checkpoint["config"].get("model", {})
        return (
            f"the file is a gankd run's checkpoint, of {model.get('name')} with options {model.get('options')}: "
            "pass it as --checkpoint (gankd eval, export), or as distill.teacher: RUN in a config, to rebuild its "
            "model as it was trained"
        )


@register_weights_format("torchvision")
class TorchvisionFormat(WeightsFormat):
    describe = "torchvision's keys, or a torchvision reference-script checkpoint {'model': state dict, ...}"

    def read(self, path: Path) -> Mapping[str, Tensor]:
        state = _torch_load(path)
        if isinstance(state.get("model"), Mapping):
            state = state["model"]
        return _strip_module_prefix(state)


@register_weights_format("cyclegan")
class CycleGANFormat(WeightsFormat):
    """pytorch-CycleGAN-and-pix2pix's networks.py layouts (facts in the module docstring of each branch)."""

    describe = "pytorch-CycleGAN-and-pix2pix ResnetGenerator / UnetGenerator / NLayerDiscriminator"

    def rename(self, model: nn.Module) -> Callable[[str], str]:
        _require_plain_weights(model, "cyclegan")
        if isinstance(model, ResnetGenerator):
            _require(model, "cyclegan", n_downsampling=2, upscale=1, residual=False)
            return _resnet_path(model.n_blocks)
        if isinstance(model, UnetGenerator):
            return _unet_path(model.num_downs)
        if isinstance(model, PatchGANDiscriminator):
            return _patchgan_path(model.n_layers)
        raise WeightsFormatError(
            f"the 'cyclegan' format holds resnet_g, unet_g or patchgan_d weights, not {type(model).__name__}"
        )

    def architecture(self, state: Mapping[str, Tensor]) -> str:
        return describe(cyclegan_architecture(state))

    def bias_free(self, model: nn.Module) -> set[str]:
        # pix2pix gives a conv a bias only with instance norm; gankd also gives one without norm.
        if model.norm != "none":
            return set()
        last = {"to_image.1", "up.0.1", "head", "stem.0"}  # layers the official code always gives a bias
        return {path for path, module in _convs(model) if module.bias is not None and path not in last}


@register_weights_format("dcgan_example")
class DCGANExampleFormat(WeightsFormat):
    describe = "the PyTorch examples DCGAN generator (netG) and discriminator (netD), `main.N` keys"

    def rename(self, model: nn.Module) -> Callable[[str], str]:
        if not isinstance(model, (DCGANGenerator, DCGANDiscriminator)):
            raise WeightsFormatError(
                f"the 'dcgan_example' format holds dcgan_g or dcgan_d weights, not {type(model).__name__}"
            )
        _require(model, "dcgan_example", num_classes=0)
        _require_plain_weights(model, "dcgan_example")
        n_blocks = len(model.blocks)
        if isinstance(model, DCGANGenerator):
            # main: ConvT, BN, ReLU (stem) · n × (ConvT, BN, ReLU) · ConvT, Tanh
            names = {"stem.0": 0, "stem.1": 1, "to_image.0": 3 + 3 * n_blocks}
        else:
            # main: Conv, LeakyReLU (stem) · n × (Conv, BN, LeakyReLU) · Conv, Sigmoid
            names = {"stem.0": 0, "head": 2 + 3 * n_blocks}
        offset = 3 if isinstance(model, DCGANGenerator) else 2
        for block in range(n_blocks):
            names |= {f"blocks.{block}.0": offset + 3 * block, f"blocks.{block}.1": offset + 1 + 3 * block}
        return lambda path: f"main.{names[path]}" if path in names else path

    def architecture(self, state: Mapping[str, Tensor]) -> str:
        return describe(dcgan_example_architecture(state))

    def bias_free(self, model: nn.Module) -> set[str]:
        return {"stem.0", "head"} if isinstance(model, DCGANDiscriminator) else set()


def _resnet_path(n_blocks: int) -> Callable[[str], str]:
    """ResnetGenerator's single `model` Sequential: down.k → model.k, blocks.i.body.j → model.{10+i}.conv_block.j,
    up.k → model.{10+n+k}, to_image.k → model.{16+n+k} (n = n_blocks)."""

    def rename(path: str) -> str:
        part, _, rest = path.partition(".")
        if part == "down":
            return f"model.{rest}"
        if part == "blocks":
            block, _, layer = rest.partition(".")
            return f"model.{10 + int(block)}.conv_block.{layer.removeprefix('body.')}"
        first = {"up": 10 + n_blocks, "to_image": 16 + n_blocks}[part]
        index, _, leaf = rest.partition(".")
        return _join(f"model.{first + int(index)}", leaf)

    return rename


def _unet_path(num_downs: int) -> Callable[[str], str]:
    """UnetGenerator's nested skip blocks: level i's Sequential is model.model. (i = 0), then
    model.model.1.model. with `3.model.` once more per level inward. Outermost: [down conv, inner, ReLU, up conv,
    Tanh]; middle: [LeakyReLU, down conv, down norm, inner, ReLU, up conv, up norm, (Dropout)]; innermost:
    [LeakyReLU, down conv, ReLU, up conv, up norm]."""

    def rename(path: str) -> str:
        direction, level, layer = path.split(".")
        level, layer = int(level), int(layer)
        prefix = "model.model." if level == 0 else "model.model.1." + "model.3." * (level - 1) + "model."
        if direction == "down":
            return f"{prefix}{0 if level == 0 else 1 + layer}"
        return f"{prefix}{layer + (2 if level in (0, num_downs - 1) else 4)}"

    return rename


def _patchgan_path(n_layers: int) -> Callable[[str], str]:
    """NLayerDiscriminator's `model`: stem conv → model.0, block k's conv and norm → model.{2+3k}, model.{3+3k},
    the head → model.{2+3n}."""

    def rename(path: str) -> str:
        if path == "stem.0":
            return "model.0"
        if path == "head":
            return f"model.{2 + 3 * n_layers}"
        _, block, layer = path.split(".")
        return f"model.{2 + 3 * int(block) + int(layer)}"

    return rename


def _require(model: nn.Module, fmt: str, **settings: object) -> None:
    for option, value in settings.items():
        if getattr(model, option) != value:
            raise WeightsFormatError(
                f"the {fmt!r} format's {type(model).__name__} has {option}={value!r}; "
                f"build the model with {option}={value!r} (got {getattr(model, option)!r})"
            )


def _require_plain_weights(model: nn.Module, fmt: str) -> None:
    if any(nn.utils.parametrize.is_parametrized(module) for module in model.modules()):
        raise WeightsFormatError(
            f"the {fmt!r} format's {type(model).__name__} has no spectral norm: build the model with "
            "spectral_norm=False to load the file"
        )


def _convs(model: nn.Module):
    return [(path, m) for path, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def _join(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path and leaf else path or leaf


def _first(keys: list[str], count: int = 5) -> str:
    return ", ".join(map(str, keys[:count])) + (f", ... {len(keys) - count} more" if len(keys) > count else "")


def _torch_load(path: Path) -> dict:
    if path.is_dir():
        raise WeightsFormatError(f"weights file {path} is a directory; give the state-dict file (.pth / .pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise WeightsFormatError(
            f"cannot read weights file {path} as tensors only: it is corrupt, not a torch file, or holds pickled "
            f"objects rather than a state dict ({type(error).__name__})"
        ) from None
    if not isinstance(state, Mapping):
        raise WeightsFormatError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _strip_module_prefix(state: Mapping) -> dict:
    """A DataParallel/DDP state dict ("module.x") as the bare model's ("x"); anything else unchanged."""
    if state and all(isinstance(key, str) and key.startswith("module.") for key in state):
        return {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)
