"""Discriminators: the DCGAN image discriminator and the pix2pix PatchGAN. Both return raw logits (use a
logits loss such as BCEWithLogits or hinge), optionally with spectral normalization on every weight."""

from __future__ import annotations

from torch import Tensor, nn

from gankd.models.layers import NORMS, apply_spectral_norm, example_images, example_labels, norm_layer
from gankd.options import check_bool, check_choice, check_int, check_power_of_two


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: images [N, channels, image_size, image_size] → logits [N].

    `stem`: stride-2 4×4 conv to `ndf` channels and LeakyReLU(0.2); each of `blocks` halves the resolution
    and doubles the width (conv, norm, LeakyReLU) down to 4×4; `head`: a 4×4 conv to one logit. With
    `num_classes > 0` it is a projection discriminator (Miyato & Koyama 2018): the logit gains
    ⟨embedding(label), sum of the last block's features over space⟩ and `forward(images, labels)` needs
    the labels. `spectral_norm=True` normalizes every conv, linear and embedding weight (SN-GAN); one then
    usually sets `norm="none"`.

    Distillation taps (`feature_layers`): `stem` and every `blocks.<i>`.
    """

    width_option = "ndf"  # the option that sets its width (gankd.models.sizing)

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        ndf: int = 64,
        norm: str = "batch",
        spectral_norm: bool = False,
        num_classes: int = 0,
    ):
        super().__init__()
        self.image_size = check_power_of_two("image_size", image_size, minimum=16, maximum=128)
        self.channels = check_int("channels", channels, minimum=1)
        self.ndf = check_int("ndf", ndf, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        check_bool("spectral_norm", spectral_norm)

        n_blocks = image_size.bit_length() - 4  # image_size/2 → 4 in halvings
        self.stem = nn.Sequential(nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True))
        width, blocks = ndf, []
        for _ in range(n_blocks):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, 2 * width, 4, 2, 1, bias=norm != "batch"),
                    norm_layer(norm, 2 * width),
                    nn.LeakyReLU(0.2, True),
                )
            )
            width *= 2
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(width, 1, 4, 1, 0)
        self.label_embedding = nn.Embedding(num_classes, width) if num_classes else None
        if self.label_embedding is not None:
            # Small, as DCGAN initialises its weights: N(0, 1) embeddings make the first projection logits ~±100.
            nn.init.normal_(self.label_embedding.weight, 0.0, 0.02)
        if spectral_norm:
            apply_spectral_norm(self)
        self.feature_layers = ("stem", *(f"blocks.{i}" for i in range(n_blocks)))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be [N, {', '.join(map(str, expected))}], got {tuple(images.shape)}")
        features = self.blocks(self.stem(images))
        logits = self.head(features).flatten()
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError(f"this discriminator is class-conditional ({self.num_classes} classes): pass labels")
            logits = logits + (self.label_embedding(labels) * features.sum(dim=(2, 3))).sum(dim=1)
        elif labels is not None:
            raise ValueError("this discriminator is unconditional (num_classes=0) but labels were given")
        return logits

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images (and labels when conditional) for one forward; `image_size` is fixed by the model."""
        images = example_images(batch_size, self.channels, self.image_size, self)
        if self.num_classes:
            return images, example_labels(batch_size, self.num_classes, self)
        return (images,)


class PatchGANDiscriminator(nn.Module):
    """PatchGAN (pix2pix's N-layer discriminator): images [N, in_channels, H, W] → logits [N, 1, H', W'].

    Each output logit judges one patch: with `n_layers=3` a 70×70 receptive field, and 256×256 inputs give
    30×30 logits. `stem`: stride-2 4×4 conv to `ndf` and LeakyReLU(0.2); `blocks`: `n_layers - 1` stride-2
    convs and one stride-1 conv, the width doubling each time up to `8·ndf`, each with norm and LeakyReLU;
    `head`: a stride-1 4×4 conv to one channel. For a conditional (pix2pix) discriminator pass the input
    and output images concatenated: `in_channels = 6` for RGB → RGB. CycleGAN uses `norm="instance"`.
    Official pytorch-CycleGAN-and-pix2pix `NLayerDiscriminator` checkpoints load with
    `build("patchgan_d", weights=path, weights_format="cyclegan")`.

    Distillation taps (`feature_layers`): `stem` and every `blocks.<i>`.
    """

    width_option = "ndf"  # the option that sets its width (gankd.models.sizing)

    def __init__(
        self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch", spectral_norm: bool = False
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.ndf = check_int("ndf", ndf, minimum=1)
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        self.norm = check_choice("norm", norm, NORMS)
        check_bool("spectral_norm", spectral_norm)
        bias = norm != "batch"

        self.stem = nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True))
        width, blocks = ndf, []
        for layer in range(1, n_layers + 1):
            out_width = ndf * min(2**layer, 8)
            stride = 2 if layer < n_layers else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, out_width, 4, stride, 1, bias=bias),
                    norm_layer(norm, out_width),
                    nn.LeakyReLU(0.2, True),
                )
            )
            width = out_width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(width, 1, 4, 1, 1)
        if spectral_norm:
            apply_spectral_norm(self)
        self.feature_layers = ("stem", *(f"blocks.{i}" for i in range(n_layers)))

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be [N, {self.in_channels}, H, W], got {tuple(images.shape)}")
        return self.head(self.blocks(self.stem(images)))

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images `image_size` (default 256) square."""
        return (example_images(batch_size, self.in_channels, 256 if image_size is None else image_size, self),)
