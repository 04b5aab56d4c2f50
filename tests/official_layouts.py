"""Independent re-implementations of published GAN architectures, for checkpoint-conversion tests.

Each class here mirrors one published network so closely that its ``state_dict()`` keys, tensor shapes and forward
outputs are those of the original; a test saves one of these state dicts, pushes it through a gankd key converter
into gankd's own model, and compares outputs. Mirrored sources:

- junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``: ``get_norm_layer``, ``ResnetGenerator``,
  ``ResnetBlock``, ``UnetGenerator``, ``UnetSkipConnectionBlock``, ``NLayerDiscriminator``.
- pytorch/examples, ``dcgan/main.py``: ``Generator`` and ``Discriminator`` (single-device path only).

Weights: the default PyTorch initialisation already gives every conv weight and bias distinct random values, which is
all a conversion test needs; BatchNorm starts at weight 1, bias 0, mean 0, var 1, under which a swapped or dropped
norm layer can go unnoticed, so call :func:`randomize_batch_norm_buffers` before saving.
"""

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

_NORMS = ("batch", "instance", "none")


def official_norm(norm: str) -> NormFactory:
    """The norm-layer factory of pix2pix's ``get_norm_layer`` (current upstream version).

    "batch" → ``BatchNorm2d(C, affine=True, track_running_stats=True)``; "instance" →
    ``InstanceNorm2d(C, affine=False, track_running_stats=False)`` (no parameters, no buffers); "none" →
    ``Identity()``, which still occupies its index in the surrounding Sequential.
    """
    if norm == "batch":
        return lambda channels: nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return lambda channels: nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")


def official_use_bias(norm: str) -> bool:
    """pix2pix's ``use_bias`` rule: the convs followed by a norm layer carry a bias only with instance norm.

    Upstream compares the factory with ``nn.InstanceNorm2d``, so "none" (a plain function there) also gives no bias.
    The first conv of the discriminator and the last conv of each generator always have a bias.
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return norm == "instance"


class ResnetBlock(nn.Module):
    """pix2pix ``ResnetBlock`` with reflect padding: ``x + conv_block(x)``.

    ``conv_block``: [ReflectionPad2d(1), conv3, norm, ReLU, (Dropout(0.5),) ReflectionPad2d(1), conv3, norm], so the
    convs sit at indices 1 and 5, or 1 and 6 with dropout.
    """

    def __init__(self, dim: int, norm: str, use_dropout: bool) -> None:
        super().__init__()
        norm_layer, use_bias = official_norm(norm), official_use_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.conv_block(features)


class ResnetGenerator(nn.Module):
    """pix2pix / CycleGAN ``ResnetGenerator`` (padding_type "reflect"), e.g. ``resnet_9blocks``.

    One ``model`` Sequential, with n = n_blocks: 0 pad, 1 conv7, 2 norm, 3 ReLU; 4 and 7 stride-2 conv3 (norms 5, 8);
    ``10 + i`` ResnetBlock i; ``10 + n`` and ``13 + n`` ConvTranspose2d(k3, s2, p1, output_padding=1) with norms at
    ``11 + n`` and ``14 + n``; ``16 + n`` pad, ``17 + n`` conv7 (always with bias), ``18 + n`` Tanh.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        n_blocks: int = 6,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        norm_layer, use_bias = official_norm(norm), official_use_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        # Two stride-2 downsamplings, doubling the width each time.
        for level in range(2):
            channels = ngf * 2**level
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(channels * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        # Two transposed-conv upsamplings back to ngf channels.
        for level in range(2):
            channels = ngf * 2 ** (2 - level)
            layers += [
                nn.ConvTranspose2d(
                    channels, channels // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias
                ),
                norm_layer(channels // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class UnetSkipConnectionBlock(nn.Module):
    """pix2pix ``UnetSkipConnectionBlock``: one U-Net level, holding the next level inside its ``model`` Sequential.

    Middle: [LeakyReLU(0.2, in place), conv4 s2, norm, submodule, ReLU, convT4 s2, norm, (Dropout(0.5))].
    Innermost: [LeakyReLU, conv4 s2, ReLU, convT4 s2, norm] (no down-norm). Outermost: [conv4 s2, submodule, ReLU,
    convT4 s2 (always with bias), Tanh]. Every block but the outermost returns ``cat([x, model(x)], 1)``.

    The leading LeakyReLU works in place, exactly as upstream's ``nn.LeakyReLU(0.2, True)``: it overwrites the block's
    input (the parent's down-norm or down-conv output) before ``torch.cat`` reads it, so the skip half of the block's
    output is LeakyReLU(x), not x. The generator's final output and gradients do not depend on it, since every
    consumer of a block's output starts with ReLU and ReLU(LeakyReLU(x)) = ReLU(x); the block outputs themselves (what
    a tap on a block sees) and the parent's down-norm output do, so it is kept on purpose.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer, use_bias = official_norm(norm), official_use_bias(norm)
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [
                nn.LeakyReLU(0.2, True),
                downconv,
                norm_layer(inner_nc),
                submodule,
                nn.ReLU(True),
                upconv,
                norm_layer(outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        if any(layer is None for layer in layers):
            raise ValueError("only the innermost block may be built without a submodule")
        self.model = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(features)
        # self.model runs first and its in-place LeakyReLU rewrites `features` before the concatenation.
        return torch.cat([features, self.model(features)], 1)


class UnetGenerator(nn.Module):
    """pix2pix ``UnetGenerator`` (``unet_256`` = 8 downs, ``unet_128`` = 7 downs); inputs of side 2**num_downs.

    Built inside out: the innermost ngf*8 block, ``num_downs - 5`` middle ngf*8 blocks (the only ones with dropout),
    then ngf*4, ngf*2, ngf and the outermost block. Keys nest as ``model.model.1.model.3.model.3...``.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class NLayerDiscriminator(nn.Module):
    """pix2pix ``NLayerDiscriminator`` (PatchGAN; "basic" = 3 layers), without the old ``use_sigmoid`` option.

    ``model``: conv4 s2 (with bias) + LeakyReLU; ``n_layers - 1`` × [conv4 s2, norm, LeakyReLU] with width
    ndf * min(2**n, 8); [conv4 s1, norm, LeakyReLU]; conv4 s1 to one channel (with bias). For 3 layers the convs sit
    at 0, 2, 5, 8, 11 and the norms at 3, 6, 9.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        norm_layer, use_bias = official_norm(norm), official_use_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        width = ndf
        for layer_index in range(1, n_layers + 1):
            next_width = ndf * min(2**layer_index, 8)
            # The last of these keeps the resolution (stride 1); the others halve it.
            stride = 1 if layer_index == n_layers else 2
            layers += [
                nn.Conv2d(width, next_width, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                norm_layer(next_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class DCGANGenerator(nn.Module):
    """pytorch/examples ``dcgan/main.py`` ``Generator``: noise [N, nz, 1, 1] → images [N, nc, 64, 64].

    ``main``: ConvTranspose2d (no bias) at 0, 3, 6, 9, 12; BatchNorm2d at 1, 4, 7, 10; ReLU between; Tanh last.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.main(noise)


class DCGANDiscriminator(nn.Module):
    """pytorch/examples ``dcgan/main.py`` ``Discriminator``: images [N, nc, 64, 64] → probabilities [N].

    ``main``: Conv2d (no bias) at 0, 2, 5, 8, 11; BatchNorm2d at 3, 6, 9; LeakyReLU(0.2) between; Sigmoid last.
    """

    def __init__(self, nc: int = 3, ndf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1, 1).squeeze(1)


def with_legacy_instance_norm_keys(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> OrderedDict[str, torch.Tensor]:
    """A copy of ``state_dict`` with the InstanceNorm entries that old pix2pix checkpoints carry.

    Checkpoints saved by old PyTorch versions (or by the 2018 pix2pix code, whose instance norm tracked running
    stats) hold ``running_mean``, ``running_var`` and ``num_batches_tracked`` for every InstanceNorm2d layer; the
    official loader (``__patch_instance_norm_state_dict``) deletes them. For each InstanceNorm2d module path ``p`` of
    ``model`` this adds ``p.running_mean`` (zeros [C]), ``p.running_var`` (ones [C]) and ``p.num_batches_tracked``
    (int64 scalar 0), placed after that module's own entries, so key order follows the module tree as a real
    checkpoint's would. Entries already present are kept as they are.
    """
    remaining = OrderedDict(state_dict)
    patched: OrderedDict[str, torch.Tensor] = OrderedDict()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        # The module's own parameters and buffers, in the order state_dict() would list them.
        local_names = [name for name, _ in module.named_parameters(recurse=False)]
        local_names += [name for name, _ in module.named_buffers(recurse=False)]
        for name in local_names:
            if prefix + name in remaining:
                patched[prefix + name] = remaining.pop(prefix + name)
        if isinstance(module, nn.InstanceNorm2d):
            legacy = {
                "running_mean": torch.zeros(module.num_features),
                "running_var": torch.ones(module.num_features),
                "num_batches_tracked": torch.tensor(0, dtype=torch.long),
            }
            for name, value in legacy.items():
                patched[prefix + name] = remaining.pop(prefix + name, value)
    # Anything the model does not own (should not happen for matching pairs) goes last, unchanged.
    patched.update(remaining)
    return patched


def randomize_batch_norm_buffers(model: ModuleT, generator: torch.Generator) -> ModuleT:
    """Give every BatchNorm layer of ``model`` random, non-trivial statistics and affine parameters, in place.

    running_mean ~ N(0, 0.5²), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5), bias ~ N(0, 0.2²) where present,
    num_batches_tracked = 7; the values are drawn on the CPU from ``generator`` (a CPU generator) and copied to the
    layer's device and dtype. Conv weights and biases need nothing: PyTorch's default initialisation already makes
    them random. Returns ``model``.
    """
    batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, batch_norms):
                continue
            channels = module.num_features
            if module.running_mean is not None:
                module.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
            if module.running_var is not None:
                module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
            if module.num_batches_tracked is not None:
                module.num_batches_tracked.fill_(7)
            if module.weight is not None:
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
            if module.bias is not None:
                module.bias.copy_(0.2 * torch.randn(channels, generator=generator))
    return model
