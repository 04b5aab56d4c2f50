"""Model zoo: generators, discriminators and classifiers built by name, at any width.

model = gankd.models.build("resnet_g", ngf=16, n_blocks=9)
gankd.models.feature_layers(model)      # ("down", "blocks.1", "blocks.3", "blocks.5", "blocks.8", "up")
gankd.models.cost(model, *gankd.models.example_inputs(model))   # {"params": ..., "macs": ...}
"""

from gankd.models.classifiers import CifarResNet, SmallCNN
from gankd.models.cost import cost, example_inputs
from gankd.models.discriminators import DCGANDiscriminator, PatchGANDiscriminator
from gankd.models.generators import DCGANGenerator, ResnetGenerator
from gankd.models.torchvision_models import classification_archs
from gankd.models.zoo import TEACHER_STUDENT, build, cost_table, feature_layers, names, register

__all__ = [
    "TEACHER_STUDENT",
    "CifarResNet",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "PatchGANDiscriminator",
    "ResnetGenerator",
    "SmallCNN",
    "build",
    "classification_archs",
    "cost",
    "cost_table",
    "example_inputs",
    "feature_layers",
    "names",
    "register",
]
