"""Generators: the DCGAN noise-to-image generator and the pix2pix/CycleGAN ResNet image-to-image generator
(the pix2pix U-Net is in gankd.models.unet).

All end in tanh, so images come out in [-1, 1], the range gankd.data gives images in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.models.layers import example_images, example_labels, example_noise, norm_layer
from gankd.options import check_bool, check_choice, check_int, check_power_of_two


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016): noise [N, nz] → images [N, channels, image_size, image_size].

    A transposed conv projects the noise to 4×4 at width `ngf · image_size / 8`; each block doubles the
    resolution and halves the width, down to `ngf` channels at half the output size; `to_image` makes the
    last doubling and applies tanh. With `num_classes > 0` the generator is class-conditional: a learned
    label embedding (one vector of size `num_classes` per class) is concatenated to the noise and
    `forward(noise, labels)` needs the labels. `norm`: "batch" (DCGAN's, the default), "instance" or
    "none" (the transposed convs then have biases).

    Distillation taps (`feature_layers`): `stem` (4×4) and every `blocks.<i>` (8×8, 16×16, ...).
    Widths scale with `ngf`, so MACs scale about as `ngf²`.
    """

    width_option = "ngf"  # the option that sets its width (gankd.models.sizing)

    def __init__(self, image_size: int = 64, nz: int = 100, ngf: int = 64, channels: int = 3, num_classes: int = 0,
                 norm: str = "batch"):  # fmt: skip
        super().__init__()
        self.image_size = check_power_of_two("image_size", image_size, minimum=16, maximum=128)
        self.nz = check_int("nz", nz, minimum=1)
        self.ngf = check_int("ngf", ngf, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)

        n_blocks = image_size.bit_length() - 4  # 4×4 → image_size/2 in doublings: 16 → 1, 32 → 2, 64 → 3
        width = ngf * 2**n_blocks
        self.label_embedding = nn.Embedding(num_classes, num_classes) if num_classes else None
        bias = norm != "batch"
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(nz + num_classes, width, 4, 1, 0, bias=bias), norm_layer(norm, width), nn.ReLU(True)
        )
        blocks = []
        for _ in range(n_blocks):
            blocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=bias),
                    norm_layer(norm, width // 2),
                    nn.ReLU(True),
                )
            )
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh())
        self.feature_layers = ("stem", *(f"blocks.{i}" for i in range(n_blocks)))

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if noise.dim() == 4:
            noise = noise.flatten(1)
        if noise.dim() != 2 or noise.shape[1] != self.nz:
            raise ValueError(f"noise must be [N, {self.nz}] or [N, {self.nz}, 1, 1], got {tuple(noise.shape)}")
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError(f"this generator is class-conditional ({self.num_classes} classes): pass labels")
            noise = torch.cat([noise, self.label_embedding(labels)], dim=1)
        elif labels is not None:
            raise ValueError("this generator is unconditional (num_classes=0) but labels were given")
        return self.to_image(self.blocks(self.stem(noise[:, :, None, None])))

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Noise (and labels when conditional) for one forward; `image_size` is fixed by the model."""
        noise = example_noise(batch_size, self.nz, self)
        if self.num_classes:
            return noise, example_labels(batch_size, self.num_classes, self)
        return (noise,)


class ResnetBlock(nn.Module):
    """x + (reflection-pad, 3×3 conv, norm, ReLU, [Dropout(0.5),] reflection-pad, 3×3 conv, norm)(x), as in
    pix2pix (the dropout with `dropout=True`, pix2pix's `use_dropout`)."""

    def __init__(self, channels: int, norm: str, dropout: bool = False):
        super().__init__()
        bias = norm != "batch"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
            nn.ReLU(True), *([nn.Dropout(0.5)] if dropout else []),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
        )  # fmt: skip

    def forward(self, features: Tensor) -> Tensor:
        return features + self.body(features)


class ResnetGenerator(nn.Module):
    """ResNet image-to-image generator (Johnson et al. 2016; pix2pix/CycleGAN; GAN Compression's teacher).

    `down`: reflection-padded 7×7 conv to `ngf` channels, then `n_downsampling` stride-2 convs, each
    doubling the width. `blocks`: `n_blocks` residual blocks at width `ngf · 2^n_downsampling`. `up`:
    `n_downsampling` stride-2 transposed convs back to `ngf` channels, then `log2(upscale)` more at width
    `ngf`. `to_image`: 7×7 conv to `out_channels` and tanh. The output is `upscale` times the input size:
    `upscale=4` is 4× super-resolution (input [N, C, H, W] → output [N, C, 4H, 4W]); H and W must be
    divisible by `2^n_downsampling`. `norm`: "instance" (CycleGAN), "batch" (pix2pix) or "none" (as
    super-resolution networks since EDSR; no train/eval gap). Conv biases are used unless `norm="batch"`. With
    `residual=True` the network predicts a correction to the bicubic upsampling of its input (the usual
    super-resolution set-up), so it starts from bicubic quality instead of from nothing. `dropout=True` puts
    Dropout(0.5) between the two convs of each residual block (pix2pix's `use_dropout`; GAN Compression's
    teachers have it).

    Official pytorch-CycleGAN-and-pix2pix `ResnetGenerator` checkpoints (`resnet_6blocks`, `resnet_9blocks`)
    load with `build("resnet_g", n_blocks=9, weights=path, weights_format="cyclegan")` (n_downsampling 2,
    upscale 1, residual off: that architecture).

    Distillation taps (`feature_layers`): `down`, up to four evenly spaced `blocks.<i>` (the last always
    included), and `up` when it is not empty. MACs scale about as `ngf²`.
    """

    width_option = "ngf"  # the option that sets its width (gankd.models.sizing)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        norm: str = "instance",
        upscale: int = 1,
        residual: bool = False,
        dropout: bool = False,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.ngf = check_int("ngf", ngf, minimum=1)
        self.n_blocks = check_int("n_blocks", n_blocks, minimum=1)
        self.n_downsampling = check_int("n_downsampling", n_downsampling, minimum=0)
        self.norm = check_choice("norm", norm, ("instance", "batch", "none"))
        self.upscale = check_power_of_two("upscale", upscale, minimum=1, maximum=16)
        self.residual = check_bool("residual", residual)
        self.dropout = check_bool("dropout", dropout)
        if residual and in_channels != out_channels:
            raise ValueError(f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}")
        bias = norm != "batch"

        down = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(n_downsampling):
            width = ngf * 2**i
            down += [nn.Conv2d(width, 2 * width, 3, 2, 1, bias=bias), norm_layer(norm, 2 * width), nn.ReLU(True)]
        self.down = nn.Sequential(*down)

        width = ngf * 2**n_downsampling
        self.blocks = nn.Sequential(*(ResnetBlock(width, norm, dropout) for _ in range(n_blocks)))

        # Undo the downsampling (halving the width each time), then upsample further at width ngf.
        up = []
        for _ in range(n_downsampling + upscale.bit_length() - 1):
            out_width = max(width // 2, ngf)
            up += [
                nn.ConvTranspose2d(width, out_width, 3, 2, 1, output_padding=1, bias=bias),
                norm_layer(norm, out_width),
                nn.ReLU(True),
            ]
            width = out_width
        self.up = nn.Sequential(*up)
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh())

        tapped_blocks = sorted({(k + 1) * n_blocks // 4 - 1 for k in range(4)} - {-1})
        self.feature_layers = ("down", *(f"blocks.{i}" for i in tapped_blocks), *(("up",) if up else ()))

    def forward(self, images: Tensor) -> Tensor:
        multiple = 2**self.n_downsampling
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be [N, {self.in_channels}, H, W], got {tuple(images.shape)}")
        if images.shape[2] % multiple or images.shape[3] % multiple:
            raise ValueError(
                f"image height and width must be divisible by 2^n_downsampling = {multiple}, "
                f"got {tuple(images.shape[2:])}"
            )
        output = self.to_image(self.up(self.blocks(self.down(images))))
        if self.residual:
            base = images if self.upscale == 1 else F.interpolate(images, scale_factor=self.upscale, mode="bicubic")
            output = base + output
        return output

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images whose output is `image_size` (default 256) square: the input is `image_size / upscale`."""
        output_size = 256 if image_size is None else image_size
        return (example_images(batch_size, self.in_channels, output_size // self.upscale, self),)
