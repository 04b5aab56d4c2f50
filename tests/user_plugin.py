"""A user's own module, as a run config names it in `imports`: a loss term, a metric, a model and a task,
each one registered class or function, with no edit inside gankd (tests/test_registries.py uses it)."""

import torch
from torch import nn

import gankd.distill
import gankd.metrics
import gankd.models
import gankd.tasks


@gankd.distill.register_term("user_logit_l1")
class LogitL1(gankd.distill.LossTerm):
    """Mean over the batch of sum |y_teacher - y_student| over the classes, optionally of the top `classes`."""

    needs_teacher = True
    outputs = ("logits",)

    def __init__(self, weight: float = 1.0, *, scale: float = 1.0):
        super().__init__(weight)
        self.scale = scale

    def forward(self, step: gankd.distill.StepTensors) -> torch.Tensor:
        return self.scale * (step.student_output - step.teacher_output).abs().sum(-1).mean()


@gankd.metrics.register_metric("user_confidence", evidence=gankd.metrics.Predictions)
def mean_confidence(evidence, names, settings):
    """Mean probability the classifier gives its predicted class."""
    return {"user_confidence": evidence.logits.softmax(-1).amax(-1).mean().item()}, {"what": "mean max softmax"}


@gankd.models.register("user_mlp")
class DigitsMLP(nn.Module):
    """Flatten, one hidden layer, logits: a classifier of the user's own."""

    def __init__(self, pixels: int = 1024, hidden: int = 32, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.flatten(images)))


@gankd.tasks.register("user_denoise")
class DenoiseTask(gankd.tasks.Image2ImageTask):
    """Image-to-image on (image, label) data: the input is the image with seeded noise, the target the image."""

    def from_data(self, items, model, draw_noise):
        images = items[0]
        noise = draw_noise(images[0].numel()).view_as(images)
        return (images + 0.3 * noise).clamp(-1, 1), images

    def real_images(self, items):
        return items[0]

    def default_metrics(self, dataset, *, teacher):
        return ["psnr"]

    def evaluate(self, model, dataset, metrics, *, teacher, settings, num_samples=None):
        generator = torch.Generator().manual_seed(0)
        images = gankd.metrics.stack_images(dataset)
        noisy = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
        with torch.no_grad():
            output = model.eval()(noisy).clamp(-1, 1)
        return gankd.metrics.measure(gankd.metrics.PairedImages(output, images), metrics, settings)

    def sample_grid(self, model, dataset, device):
        return None


class ImageAndFeatures(nn.Module):
    """A StyleGAN-style block: returns (features, a one-channel image made from them)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.to_image = nn.Conv2d(width, 1, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.conv(features))
        return features, self.to_image(features)


@gankd.models.register("user_tuple_cnn")
class TupleCNN(nn.Module):
    """A digits classifier of the user's own whose block returns a tuple (tapped as `block[0]`), with a width
    gankd can choose for a MACs budget; no example_inputs method (gankd sizes it on the run's data)."""

    width_option = "width"

    def __init__(self, width: int = 16, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.block = ImageAndFeatures(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, image = self.block(torch.relu(self.stem(images)))
        return self.head(features.mean((2, 3))) + image.mean((1, 2, 3))[:, None]
