"""Model zoo: generators, discriminators and classifiers built by name, at any width.

model = gankd.models.build("resnet_g", ngf=16, n_blocks=9)
gankd.models.feature_layers(model)      # ("down", "blocks.1", "blocks.3", "blocks.5", "blocks.8", "up")
gankd.models.cost(model, *gankd.models.example_inputs(model))   # {"params": ..., "macs": ...}
teacher = gankd.models.build("unet_g", num_downs=8, weights="latest_net_G.pth", weights_format="cyclegan")
gankd.models.width_for_macs("unet_g", {"num_downs": 8}, teacher, 1 / 8)   # the widest ngf at 1/8 of its MACs
"""

from gankd.models.classifiers import CifarResNet, SmallCNN
from gankd.models.cost import cost, example_inputs
from gankd.models.discriminators import DCGANDiscriminator, PatchGANDiscriminator
from gankd.models.from_teacher import init_from_teacher
from gankd.models.generators import DCGANGenerator, ResnetGenerator
from gankd.models.inputs import set_input_convention
from gankd.models.sizing import resolved_options, width_for_macs, width_option
from gankd.models.torchvision_models import classification_archs
from gankd.models.unet import UnetGenerator
from gankd.models.weight_formats import (
    WeightsFormat,
    WeightsFormatError,
    load_weights,
    register_weights_format,
    weights_formats,
)
from gankd.models.zoo import TEACHER_STUDENT, build, constructor, cost_table, feature_layers, names, register

__all__ = [
    "TEACHER_STUDENT",
    "CifarResNet",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "PatchGANDiscriminator",
    "ResnetGenerator",
    "SmallCNN",
    "UnetGenerator",
    "WeightsFormat",
    "WeightsFormatError",
    "build",
    "classification_archs",
    "constructor",
    "cost",
    "cost_table",
    "example_inputs",
    "feature_layers",
    "init_from_teacher",
    "load_weights",
    "names",
    "register",
    "resolved_options",
    "register_weights_format",
    "set_input_convention",
    "weights_formats",
    "width_for_macs",
    "width_option",
]
