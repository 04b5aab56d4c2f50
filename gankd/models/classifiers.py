"""Classifiers: the CIFAR-style ResNet family of the distillation papers (resnet8x4, resnet32x4, ...) and a
small CNN. Both take images [N, in_channels, H, W] (any size, pooled globally) and return logits."""

from __future__ import annotations

from torch import Tensor, nn

from gankd.models.layers import example_images, norm_layer
from gankd.options import check_int, check_optional_int


class BasicBlock(nn.Module):
    """3×3 conv, BN, ReLU, 3×3 conv, BN, plus the shortcut (a 1×1 conv and BN when the shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
        )  # fmt: skip
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(True)

    def forward(self, features: Tensor) -> Tensor:
        return self.relu(self.body(features) + self.shortcut(features))


class CifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016) as in the CRD distillation code base: depth = 6n + 2.

    `stem`: 3×3 conv, BN, ReLU at `stem_channels`; `layer1`, `layer2`, `layer3`: n basic blocks each at
    16·width, 32·width and 64·width channels (stride 1, 2, 2); `pool`: global average pool and flatten;
    `fc`: the classifier. `stem_channels` defaults to the first stage's width; the `resnet8x4` and
    `resnet32x4` presets set it to 32, matching the published models (1.2 M and 7.4 M parameters at 100
    classes).

    Distillation taps (`feature_layers`): `layer1`, `layer2`, `layer3` and `pool` (the penultimate
    features).
    """

    width_option = "width"  # the option that sets its width (gankd.models.sizing)

    def __init__(
        self,
        depth: int = 32,
        width: int = 4,
        num_classes: int = 100,
        in_channels: int = 3,
        stem_channels: int | None = None,
    ):
        super().__init__()
        check_int("depth", depth, minimum=8)
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        self.width = check_int("width", width, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        stage_widths = (16 * width, 32 * width, 64 * width)
        stem_channels = check_optional_int("stem_channels", stem_channels, minimum=1) or stage_widths[0]

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(True)
        )
        blocks_per_stage = (depth - 2) // 6
        channels = stem_channels
        for index, (stage_width, stride) in enumerate(zip(stage_widths, (1, 2, 2), strict=True), start=1):
            blocks = []
            for block in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, stage_width, stride if block == 0 else 1))
                channels = stage_width
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self.feature_layers = ("layer1", "layer2", "layer3", "pool")

    def forward(self, images: Tensor) -> Tensor:
        features = self.layer3(self.layer2(self.layer1(self.stem(images))))
        return self.fc(self.pool(features))

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images `image_size` (default 32) square."""
        return (example_images(batch_size, self.in_channels, 32 if image_size is None else image_size, self),)


def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """CRD's resnet8x4: depth 8, width 4, 32 stem channels (the usual student of resnet32x4)."""
    return CifarResNet(depth=8, width=4, num_classes=num_classes, in_channels=in_channels, stem_channels=32)


def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """CRD's resnet32x4: depth 32, width 4, 32 stem channels (the usual teacher)."""
    return CifarResNet(depth=32, width=4, num_classes=num_classes, in_channels=in_channels, stem_channels=32)


class SmallCNN(nn.Module):
    """A small CNN for digit-sized images: three blocks of (3×3 conv, norm, ReLU, 2×2 max-pool) at width,
    2·width and 4·width channels, then `pool` (global average pool, flatten) and `fc`. `norm`: "batch"
    (default), "instance" or "none" (the convs then have biases).

    Distillation taps (`feature_layers`): `conv1`, `conv2`, `conv3`, `pool`. MACs scale about as `width²`.
    """

    width_option = "width"  # the option that sets its width (gankd.models.sizing)

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, norm: str = "batch"):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.width = check_int("width", width, minimum=1)
        channels = in_channels
        for index, out_channels in enumerate((width, 2 * width, 4 * width), start=1):
            block = nn.Sequential(
                nn.Conv2d(channels, out_channels, 3, 1, 1, bias=norm != "batch"), norm_layer(norm, out_channels),
                nn.ReLU(True), nn.MaxPool2d(2),
            )  # fmt: skip
            self.add_module(f"conv{index}", block)
            channels = out_channels
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self.feature_layers = ("conv1", "conv2", "conv3", "pool")

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv3(self.conv2(self.conv1(images)))))

    def example_inputs(self, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
        """Images `image_size` (default 32) square."""
        return (example_images(batch_size, self.in_channels, 32 if image_size is None else image_size, self),)
