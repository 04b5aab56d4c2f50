"""The pix2pix U-Net generator (Isola et al. 2017), written as two flat lists of levels so that its feature
taps and state-dict keys read as `down.<i>` / `up.<i>` instead of pix2pix's nested skip blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.models.layers import NORMS, example_images, norm_layer
from gankd.options import check_bool, check_choice, check_int


class UnetGenerator(nn.Module):
    """U-Net image-to-image generator: images [N, in_channels, H, W] → [N, out_channels, H, W] in [-1, 1].

    `num_downs` stride-2 4×4 convs halve the resolution down to 1×1 at H = 2^num_downs (pix2pix's
    `unet_256` is num_downs=8, `unet_128` is 7), widths ngf, 2·ngf, 4·ngf, then 8·ngf; `num_downs`
    transposed convs come back up, each level concatenating the encoder's features of its resolution
    (the skip connection) to its input. Level `i` (0 = outermost) is `down.<i>` (for i ≥ 1 applied after a
    LeakyReLU(0.2)) and `up.<i>` (ReLU, transposed conv, norm, and Dropout(0.5) on the `num_downs - 5`
    middle levels at width 8·ngf when `dropout`); `up.0` ends in tanh. As in pix2pix, the skip of level
    i ≥ 1 carries LeakyReLU of the encoder's features (its in-place activation rewrote them), and the
    innermost level has no norm on the way down. `norm`: "batch" (pix2pix's), "instance" or "none"; convs
    have biases unless `norm="batch"` (the outermost transposed conv always has one).

    Official pytorch-CycleGAN-and-pix2pix `UnetGenerator` checkpoints load with
    `build("unet_g", num_downs=8, weights=path, weights_format="cyclegan")`.

    Distillation taps (`feature_layers`): the bottleneck `down.<num_downs-1>` (H / 2^num_downs) and the
    decoder levels at the skip connections `up.3`, `up.2`, `up.1` (4·ngf, 2·ngf and ngf channels at H/8,
    H/4 and H/2). The decoder's ReLUs are not in place, so every tap reads unmodified features. MACs scale
    about as `ngf²`.
    """

    width_option = "ngf"  # the option that sets its width (gankd.models.sizing)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = False,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.num_downs = check_int("num_downs", num_downs, minimum=5)
        self.ngf = check_int("ngf", ngf, minimum=1)
        self.norm = check_choice("norm", norm, NORMS)
        self.dropout = check_bool("dropout", dropout)
        bias = norm != "batch"

        # Encoder widths: level i maps widths[i] → widths[i + 1] channels.
        widths = [in_channels, ngf, 2 * ngf, 4 * ngf] + [8 * ngf] * (num_downs - 3)
        down, up = [], []
        for level in range(num_downs):
            conv = nn.Conv2d(widths[level], widths[level + 1], 4, 2, 1, bias=bias)
            innermost = level == num_downs - 1
            down_norm = [] if level == 0 or innermost else [norm_layer(norm, widths[level + 1])]
            down.append(nn.Sequential(conv, *down_norm))
            # Up level i takes the decoder's features (doubled by the skip, except at the innermost level) back to
            # the width the encoder had at its input (out_channels at the outermost).
            up_in = widths[level + 1] * (1 if innermost else 2)
            if level == 0:
                up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(up_in, out_channels, 4, 2, 1), nn.Tanh()))
                continue
            layers = [
                nn.ReLU(),
                nn.ConvTranspose2d(up_in, widths[level], 4, 2, 1, bias=bias),
                norm_layer(norm, widths[level]),
            ]
            if dropout and 4 <= level < num_downs - 1:
                layers.append(nn.Dropout(0.5))
            up.append(nn.Sequential(*layers))
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)
        self.feature_layers = (f"down.{num_downs - 1}", "up.3", "up.2", "up.1")

    def forward(self, images: Tensor) -> Tensor:
        multiple = 2**self.num_downs
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be [N, {self.in_channels}, H, W], got {tuple(images.shape)}")
        if images.shape[2] % multiple or images.shape[3] % multiple:
            raise ValueError(
                f"image height and width must be divisible by 2^num_downs = {multiple}, got {tuple(images.shape[2:])}"
            )
        features = self.down[0](images)
        skips = []
        for level in self.down[1:]:
            features = F.leaky_relu(features, 0.2)
            skips.append(features)
            features = level(features)
        for level in range(self.num_downs - 1, 0, -1):
            features = torch.cat([skips[level - 1], self.up[level](features)], dim=1)
        return self.up[0](features)

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images `image_size` square (default the smallest size the model takes, 2^num_downs)."""
        size = 2**self.num_downs if image_size is None else image_size
        return (example_images(batch_size, self.in_channels, size, self),)
