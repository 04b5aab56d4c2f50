"""Offline proxy metrics: Fréchet distance and KID on the features of a domain classifier gankd trains itself.

For the embedded digits the classifier is a LeNet-style network trained on the digits train split (a few
seconds on a CPU, seeded, then cached on disk). Its 128-d penultimate features feed torch-fidelity's FID and
KID code through a registered extractor whose name carries the weights' hash. The results are named
`fd_digits` and `kid_digits`: they compare only with figures from the same classifier weights, never with
published FID (the KID authors judged MNIST-like data the same way, with a LeNet).
"""

import hashlib
import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fidelity import fid_kid
from .registry import ImageSets, MetricSettings, register_metric

FEATURE_DIMS = 128
RECIPE = "digits-lenet-v2"  # bump when the network or its training changes: the cache key includes it
TRAIN_EPOCHS = 8


class DigitsLeNet(nn.Module):
    """LeNet-style digit classifier on 32×32 grayscale in [-1, 1].

    `features` is its 128-d penultimate layer standardized per dimension with the train split's mean and
    standard deviation (stored as buffers), so KID's polynomial kernel sees unit-scale features.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 5 * 5, FEATURE_DIMS), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIMS, 10)
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIMS))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIMS))

    def features(self, images: Tensor) -> Tensor:
        return (self.body(images) - self.feature_mean) / self.feature_std

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def cache_dir() -> Path:
    """Where trained proxy classifiers are kept: $GANKD_CACHE, else ~/.cache/gankd."""
    return Path(os.environ.get("GANKD_CACHE", Path.home() / ".cache" / "gankd"))


def weights_hash(model: nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save({name: value.cpu() for name, value in sorted(model.state_dict().items())}, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def train_digits_lenet(seed: int = 0, epochs: int = TRAIN_EPOCHS) -> tuple[DigitsLeNet, float]:
    """Train the proxy classifier on the digits train split; returns it and its test accuracy."""
    with torch.random.fork_rng():  # seeded training that leaves the caller's global RNG as it was
        torch.manual_seed(seed)
        return _train_digits_lenet(seed, epochs)


def _train_digits_lenet(seed: int, epochs: int) -> tuple[DigitsLeNet, float]:
    from gankd.data import build

    generator = torch.Generator().manual_seed(seed)
    train, test = build("digits", split="train", seed=seed), build("digits", split="test", seed=seed)
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor([train[i][1] for i in range(len(train))])
    model = DigitsLeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(64):
            # Small random shifts keep the features from hinging on exact pixel positions.
            shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
            loss = F.cross_entropy(model(torch.roll(images[batch], shifts=shift, dims=(2, 3))), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        train_features = model.body(images)
        model.feature_mean.copy_(train_features.mean(0))
        model.feature_std.copy_(train_features.std(0).clamp(min=1e-3))  # dead units stay finite
        test_images = torch.stack([test[i][0] for i in range(len(test))])
        test_labels = torch.tensor([test[i][1] for i in range(len(test))])
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    return model, accuracy


def digits_lenet_path(seed: int = 0) -> Path:
    """The cached proxy classifier for `seed`, trained and saved (atomically) on first use."""
    path = cache_dir() / f"{RECIPE}-seed{seed}.pt"
    if not path.is_file():
        model, accuracy = train_digits_lenet(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": model.state_dict(), "test_accuracy": accuracy, "recipe": RECIPE}, temporary)
        os.replace(temporary, path)
    return path


def load_digits_lenet(path: Path) -> tuple[DigitsLeNet, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitsLeNet()
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval().requires_grad_(False), checkpoint


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class DigitsLeNetExtractor(FeatureExtractorBase):
        """torch-fidelity extractor over DigitsLeNet: uint8 [B, 3, H, W] in, 128-d features (and logits) out."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.model = load_digits_lenet(Path(feature_extractor_weights_path))[0]

        @staticmethod
        def get_provided_features_list():
            return (str(FEATURE_DIMS), "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return str(FEATURE_DIMS)

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, images):
            gray = images.float().mean(1, keepdim=True) / 127.5 - 1.0
            if gray.shape[-2:] != (32, 32):
                gray = F.interpolate(gray, size=(32, 32), mode="bilinear", align_corners=False)
            features = self.model.features(gray)
            outputs = {str(FEATURE_DIMS): features, "logits": self.model(gray)}
            return tuple(outputs[name] for name in self.features_list)

    return DigitsLeNetExtractor


def _registered_extractor_name(weights_sha256: str) -> str:
    # One registration per weights hash: torch-fidelity keys its caches by extractor name.
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    name = f"gankd-digits-lenet-{weights_sha256[:12]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _extractor_class())
    return name


def digits_fd_kid(
    generated: Tensor, reference: Tensor, *, seed: int = 0, fid: bool = True, kid: bool = True, device="cpu"
) -> dict:
    """Proxy FD/KID for digit images (32×32, any channel count) on gankd's digits LeNet features."""
    path = digits_lenet_path(seed)
    model, checkpoint = load_digits_lenet(path)
    digest = weights_hash(model)
    values = fid_kid(generated, reference, extractor=_registered_extractor_name(digest), weights_path=path,
                     feature_dims=FEATURE_DIMS, fid=fid, kid=kid, device=device)  # fmt: skip
    renamed = {{"fid": "fd_digits", "kid": "kid_digits", "kid_std": "kid_digits_std"}[k]: v for k, v in values.items()}
    return dict(renamed, extractor=f"{RECIPE} (seed {seed}, test accuracy {checkpoint['test_accuracy']:.3f})",
                weights_sha256=digest[:16], samples_generated=int(generated.shape[0]),
                samples_reference=int(reference.shape[0]), comparable_with_published=False)  # fmt: skip


@register_metric("fd_digits", "kid_digits", evidence=ImageSets)
def _digits_metrics(evidence: ImageSets, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Proxy FD and KID on gankd's digits LeNet; comparable only with each other."""
    values = digits_fd_kid(evidence.generated, evidence.reference, fid="fd_digits" in names,
                           kid="kid_digits" in names, device=settings.device)  # fmt: skip
    return {name: values[name] for name in names}, values
