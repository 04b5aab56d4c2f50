"""gankd.distill: feature taps, the Distiller's terms for each task against hand computations with the
reference functions, gradients, modes, state dicts, and every bad input with its message."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gankd import models, weights
from gankd.distill import Distiller, DistillTerms, FeatureTaps, declared_channels
from gankd.kernels import attention_transfer_ref, feature_match_ref, softmax_kl_ref
from gankd.metrics import perceptual
from gankd.metrics.image_quality import psnr
from gankd.weights import MetricWeightsError


def adapted_ref(student_map, teacher_map, adapter):
    """mse between teacher features and W·s + b per position, written with a matmul over channels."""
    matrix = adapter.weight.reshape(adapter.weight.shape[0], -1)
    adapted = torch.movedim(torch.movedim(student_map, 1, -1) @ matrix.t() + adapter.bias, -1, 1)
    return feature_match_ref(adapted, teacher_map, kind="mse")


def dcgan_features(generator, noise):
    """A DCGAN generator's stem, blocks and image, run module by module (no hooks)."""
    features = {"stem": generator.stem(noise[:, :, None, None])}
    tensor = features["stem"]
    for index, block in enumerate(generator.blocks):
        tensor = features[f"blocks.{index}"] = block(tensor)
    features["output"] = generator.to_image(tensor)
    return features


def no_hooks(*modules):
    return all(not m._forward_hooks for module in modules for m in module.modules())


@pytest.fixture
def dcgan():
    torch.manual_seed(0)
    teacher = models.build("dcgan_g", image_size=32, nz=8, ngf=16)
    student = models.build("dcgan_g", image_size=32, nz=8, ngf=4)
    discriminator = models.build("dcgan_d", image_size=32, ndf=4)
    return teacher, student, discriminator


def sequential_pair():
    """A user's own image-to-image teacher and student: plain nn.Sequential, no gankd model."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(16, 3, 3, padding=1))  # fmt: skip
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    return teacher, student


# ------------------------------------------------------------------------------------------------------------
# FeatureTaps


def test_feature_taps_catch_submodule_outputs_and_remove_their_hooks(dcgan):
    generator = dcgan[0]
    noise = torch.randn(2, 8)
    expected = dcgan_features(generator.eval(), noise)
    with FeatureTaps(generator, ["blocks.1", "stem"]) as taps:
        assert taps.attached and not no_hooks(generator)
        output = generator(noise)
    assert no_hooks(generator) and not taps.attached
    assert torch.equal(taps["stem"], expected["stem"]) and torch.equal(taps["blocks.1"], expected["blocks.1"])
    assert torch.equal(output, expected["output"])
    # attach/detach as an object; the root path "" is the model's output
    root = FeatureTaps(generator, [""]).attach()
    generator(noise)
    root.detach()
    assert torch.equal(root[""], expected["output"]) and no_hooks(generator)
    root.clear()
    with pytest.raises(ValueError, match="did not run in the last forward with the taps attached"):
        root[""]
    with pytest.raises(KeyError, match="'blocks.0' is not tapped"):
        taps["blocks.0"]


def test_feature_taps_bad_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True), nn.Sequential(nn.Conv2d(2, 2, 1)))
    with pytest.raises(ValueError, match=r"no module at path '2\.1'; closest: '2\.0'.*named_modules\(\)\]"):
        FeatureTaps(model, ["2.1"])
    with pytest.raises(TypeError, match="not the single string"):
        FeatureTaps(model, "0")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        FeatureTaps(lambda x: x, ["0"])
    # The conv's output is changed in place by the ReLU that follows it: reading it is refused.
    with FeatureTaps(model, ["0", "1"]) as taps:
        model(torch.randn(1, 1, 2, 2))
    assert taps["1"].min() >= 0
    with pytest.raises(ValueError, match="'0' was changed in place after it was tapped"):
        taps["0"]
    tuple_model = nn.LSTM(2, 2)
    with FeatureTaps(tuple_model, [""]), pytest.raises(ValueError, match="returned a tuple of 2"):
        tuple_model(torch.randn(1, 1, 2))
    assert no_hooks(tuple_model)


# ------------------------------------------------------------------------------------------------------------
# The three tasks against hand computations


def test_generator_terms_match_the_reference_functions(dcgan):
    teacher, student, discriminator = dcgan
    pairs = {"blocks.0": "blocks.0", "blocks.1": "blocks.1"}
    weights_ = {"output": 1.0, "adapted": 0.5, "attention": 2.0, "adversarial": 0.1}
    terms_ = {"output": 1.0, "adapted": {"weight": 0.5, "pairs": pairs}, "attention": {"weight": 2.0, "pairs": pairs},
              "adversarial": 0.1}  # fmt: skip
    distiller = Distiller(teacher, student, task="generator", terms=terms_, discriminator=discriminator,
                          impl="reference")  # fmt: skip
    adapters = distiller.terms["adapted"].adapters
    noise = torch.randn(4, 8)
    terms = distiller((noise, None))
    assert isinstance(terms, DistillTerms) and list(terms) == [*weights_, "total"]
    assert all(value.dtype == torch.float32 and value.shape == () for value in terms.values())

    s, t = dcgan_features(student, noise), dcgan_features(teacher, noise)
    expected = {
        "output": feature_match_ref(s["output"], t["output"], kind="l1"),
        "adapted": sum(adapted_ref(s[p], t[p], adapter) for p, adapter in zip(pairs, adapters, strict=True)),
        "attention": sum(attention_transfer_ref(s[p], t[p], p=2.0) for p in pairs),
        "adversarial": F.softplus(-discriminator(s["output"])).mean(),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, msg=name)
    torch.testing.assert_close(terms.total, sum(weights_[name] * value for name, value in expected.items()))
    assert set(terms.to_floats()) == set(terms) and isinstance(terms.to_floats()["total"], float)
    torch.testing.assert_close(distiller.last_student_output, s["output"])
    assert not distiller.last_student_output.requires_grad and distiller.last_condition is None

    terms.total.backward()
    assert all(p.grad is not None for p in distiller.student_parameters())
    assert len(list(distiller.student_parameters())) == len(list(student.parameters())) + 4  # 2 adapters
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert no_hooks(teacher, student)


def test_image2image_terms_and_conditional_discriminator():
    torch.manual_seed(1)
    # Same width, fewer blocks: "down" has equal shapes for "feature"; the discriminator sees (input, image).
    teacher = models.build("resnet_g", ngf=4, n_blocks=3, n_downsampling=1)
    student = models.build("resnet_g", ngf=4, n_blocks=1, n_downsampling=1)
    discriminator = models.build("patchgan_d", in_channels=6, ndf=4, n_layers=1)
    weights_ = {"output": 1.0, "ground_truth": 0.5, "feature": 0.3, "attention": 1.0, "adversarial": 0.2}
    pairs = {"down": "down", "blocks.0": "blocks.2"}
    terms_ = {
        "output": {"weight": 1.0, "kind": "mse"},
        "ground_truth": 0.5,
        "feature": {"weight": 0.3, "pairs": pairs, "kind": "cosine"},
        "attention": {"weight": 1.0, "pairs": pairs, "p": 1.5},
        "adversarial": {"weight": 0.2, "loss": "hinge"},
    }
    distiller = Distiller(teacher, student, task="image2image", terms=terms_, discriminator=discriminator,
                          conditional_discriminator=True, impl="reference")  # fmt: skip
    inputs, targets = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    terms = distiller((inputs, targets))

    def run(model):
        down = model.down(inputs)
        blocks = [down]
        for block in model.blocks:
            blocks.append(block(blocks[-1]))
        return down, blocks[1:], model.to_image(model.up(blocks[-1]))

    (s_down, s_blocks, s_out), (t_down, t_blocks, t_out) = run(student), run(teacher)
    expected = {
        "output": F.mse_loss(s_out, t_out),
        "ground_truth": F.l1_loss(s_out, targets),
        "feature": feature_match_ref(s_down, t_down, kind="cosine")
        + feature_match_ref(s_blocks[0], t_blocks[2], kind="cosine"),
        "attention": attention_transfer_ref(s_down, t_down, p=1.5)
        + attention_transfer_ref(s_blocks[0], t_blocks[2], p=1.5),
        "adversarial": -discriminator(torch.cat([inputs, s_out], 1)).mean(),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, msg=name)
    torch.testing.assert_close(terms.total, sum(weights_[name] * value for name, value in expected.items()))

    # The discriminator's step: the same conditioning, the fake detached, hinge loss.
    assert torch.equal(distiller.last_condition, inputs)
    d_loss = distiller.discriminator_loss(targets, distiller.last_student_output, real_condition=inputs,
                                          fake_condition=distiller.last_condition)  # fmt: skip
    real_logits = discriminator(torch.cat([inputs, targets], 1))
    fake_logits = discriminator(torch.cat([inputs, s_out.detach()], 1))
    torch.testing.assert_close(d_loss, F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    d_loss.backward()
    assert all(p.grad is not None for p in discriminator.parameters())
    assert all(p.grad is None for p in student.parameters())
    with pytest.raises(ValueError, match="real_condition is needed"):
        distiller.discriminator_loss(targets, s_out)


def test_ground_truth_psnr_kind_is_the_negated_mean_psnr():
    torch.manual_seed(3)
    student = models.build("resnet_g", ngf=4, n_blocks=1, n_downsampling=0, upscale=2, residual=True)
    distiller = Distiller(None, student, task="image2image", terms={"ground_truth": {"kind": "psnr"}})
    inputs, targets = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    loss = distiller((inputs, targets))["ground_truth"]
    outputs = student(inputs)
    errors = (outputs - targets).square().flatten(1).mean(1)
    torch.testing.assert_close(loss, (10 * torch.log10(errors + 1e-5)).mean())
    # Up to the floor, the loss is the metric's mean PSNR, negated and shifted by 10·log10(data range²).
    torch.testing.assert_close(-loss + 10 * math.log10(4.0), psnr(outputs, targets).mean(), rtol=0, atol=1e-3)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())
    exact = Distiller(None, nn.Identity(), task="image2image", terms={"ground_truth": {"kind": "psnr"}})
    assert exact((targets, targets))["ground_truth"].item() == pytest.approx(-50.0)  # finite for an exact image
    with pytest.raises(ValueError, match="kind.*'l1', 'mse', 'psnr'"):
        Distiller(None, student, task="image2image", terms={"ground_truth": {"kind": "ssim"}})


def test_attention_on_pooled_features_is_refused_naming_the_pair():
    # One position per sample: every attention map would be constant, the term without gradient. With an example
    # batch the Distiller refuses it at construction; without, at the first call.
    teacher, student = models.build("small_cnn", width=8), models.build("small_cnn", width=4)
    batch = (torch.randn(2, 1, 16, 16), torch.randint(0, 10, (2,)))
    refused = (r"'attention' term on student 'pool' \(2, 16\) and teacher 'pool' .*more than one spatial position.*"
               "the 'feature' and 'adapted' terms compare pooled features")  # fmt: skip
    options = dict(task="classifier", terms={"attention": {"pairs": {"pool": "pool"}}}, impl="reference")
    with pytest.raises(ValueError, match=refused):
        Distiller(teacher, student, example_batch=batch, **options)
    distiller = Distiller(teacher, student, **options)
    with pytest.raises(ValueError, match=refused):
        distiller(batch)
    # Tapped maps with positions pass the construction check.
    Distiller(
        teacher, student, example_batch=batch, **options | {"terms": {"attention": {"pairs": {"conv2": "conv2"}}}}
    )


def test_classifier_terms_with_adapted_pooled_features():
    torch.manual_seed(2)
    teacher, student = models.build("small_cnn", width=8), models.build("small_cnn", width=4)
    weights_ = {"kd": 0.9, "ce": 0.1, "adapted": 1.0, "attention": 3.0}
    # "pool" gives [N, C] features; the channels of pool (no layer of its own) are read from conv3 before it.
    pairs = {"pool": "pool", "conv2": "conv2"}
    # Attention maps need positions: pooled features would give every map the same value.
    terms_ = {"kd": {"weight": 0.9, "temperature": 3.0}, "ce": 0.1, "adapted": {"weight": 1.0, "pairs": pairs},
              "attention": {"weight": 3.0, "pairs": {"conv2": "conv2"}}}  # fmt: skip
    distiller = Distiller(teacher, student, task="classifier", terms=terms_, impl="reference")
    adapters = distiller.terms["adapted"].adapters
    assert [(a.student_channels, a.teacher_channels) for a in adapters] == [(16, 32), (8, 16)]
    images, labels = torch.randn(5, 1, 16, 16), torch.randint(0, 10, (5,))
    terms = distiller((images, labels))

    def run(model):
        conv2 = model.conv2(model.conv1(images))
        pool = model.pool(model.conv3(conv2))
        return conv2, pool, model.fc(pool)

    (s_conv2, s_pool, s_logits), (t_conv2, t_pool, t_logits) = run(student), run(teacher)
    expected = {
        "kd": softmax_kl_ref(s_logits, t_logits, 3.0),
        "ce": F.cross_entropy(s_logits, labels),
        "adapted": adapted_ref(s_pool, t_pool, adapters[0]) + adapted_ref(s_conv2, t_conv2, adapters[1]),
        "attention": attention_transfer_ref(s_conv2, t_conv2),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, msg=name)
    torch.testing.assert_close(terms.total, sum(weights_[name] * value for name, value in expected.items()))
    # KD by hand: T² · KL(p_t || p_s) at T = 3, averaged over the batch.
    log_p_s, log_p_t = F.log_softmax(s_logits / 3, -1), F.log_softmax(t_logits / 3, -1)
    torch.testing.assert_close(terms["kd"], 9 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean())

    # Cross-entropy alone needs no teacher forward: a scratch baseline through the same interface, with or
    # without a teacher object.
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    scratch = Distiller(teacher, student, task="classifier", terms={"ce": 1.0})
    torch.testing.assert_close(scratch((images, labels)).total, F.cross_entropy(student(images), labels))
    assert not calls
    alone = Distiller(None, student, task="classifier", terms={"ce": 1.0})
    torch.testing.assert_close(alone((images, labels)).total, F.cross_entropy(student(images), labels))
    assert alone.teacher is None and set(alone.state_dict()) == {f"student.{key}" for key in student.state_dict()}


def test_cross_entropy_gives_items_without_a_label_nothing():
    from gankd.distill.terms.logits import NO_LABEL

    torch.manual_seed(7)
    student = models.build("small_cnn", width=4)
    images, labels = torch.randn(6, 1, 16, 16), torch.tensor([3, NO_LABEL, 0, 9, NO_LABEL, 3])
    labelled = labels != NO_LABEL
    for smoothing in (0.0, 0.1):
        ce = Distiller(None, student, task="classifier", terms={"ce": {"weight": 1.0, "label_smoothing": smoothing}})
        logits = student(images)[labelled]  # the batch's own statistics in the batch norms, as in the step
        # A mean over all 6 items, the unlabelled ones adding 0: split-invariant, unlike a mean over the labelled.
        expected = F.cross_entropy(logits, labels[labelled], label_smoothing=smoothing, reduction="sum") / 6
        torch.testing.assert_close(ce((images, labels)).total, expected)
    # A batch without any label gives 0 and zero gradients, not NaN.
    none = Distiller(None, student, task="classifier", terms={"ce": 1.0})((images, torch.full((6,), NO_LABEL)))
    none.total.backward()
    assert none.total.item() == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in student.parameters() if p.grad is not None)


def test_logit_mse_term_regresses_the_teachers_logits_or_probabilities():
    torch.manual_seed(6)
    teacher, student = models.build("small_cnn", width=8), models.build("small_cnn", width=4)
    images = torch.randn(3, 1, 16, 16)
    for space, transform in (("logits", lambda x: x), ("probabilities", lambda x: x.softmax(-1))):
        distiller = Distiller(teacher, student, task="classifier", terms={"logit_mse": {"weight": 2.0, "space": space}})
        terms = distiller((images, None))
        difference = transform(student(images)) - transform(teacher(images))
        expected = (difference**2).sum(1).mean()  # ||y_t - y_s||^2 per sample, averaged over the batch
        torch.testing.assert_close(terms["logit_mse"], expected)
        torch.testing.assert_close(terms.total, 2.0 * expected)


def test_conditional_generator_passes_labels_to_generators_and_projection_discriminator():
    torch.manual_seed(3)
    teacher = models.build("dcgan_g", image_size=16, nz=4, ngf=8, num_classes=3)
    student = models.build("dcgan_g", image_size=16, nz=4, ngf=2, num_classes=3)
    discriminator = models.build("dcgan_d", image_size=16, ndf=2, num_classes=3)
    distiller = Distiller(teacher, student, task="generator", terms={"output": 1.0, "adversarial": {"loss": "lsgan"}},
                          discriminator=discriminator, conditional_discriminator=True)  # fmt: skip
    noise, labels = torch.randn(3, 4), torch.tensor([0, 2, 1])
    terms = distiller((noise, labels))
    fake = student(noise, labels)
    torch.testing.assert_close(terms["output"], F.l1_loss(fake, teacher(noise, labels)))
    torch.testing.assert_close(terms["adversarial"], (discriminator(fake, labels) - 1).square().mean())
    real, real_labels = torch.rand(3, 3, 16, 16) * 2 - 1, torch.tensor([1, 1, 0])
    d_loss = distiller.discriminator_loss(real, distiller.last_student_output, real_condition=real_labels,
                                          fake_condition=distiller.last_condition)  # fmt: skip
    expected = (discriminator(real, real_labels) - 1).square().mean() + discriminator(fake, labels).square().mean()
    torch.testing.assert_close(d_loss, expected)


# ------------------------------------------------------------------------------------------------------------
# The user's own modules, modes, state, devices


def test_users_own_modules_train_one_step():
    teacher, student = sequential_pair()
    terms_ = {"output": 1.0, "adapted": {"weight": 0.5, "pairs": {"1": "3"}}, "attention": {"pairs": {"1": "3"}}}
    distiller = Distiller(teacher, student, task="image2image", terms=terms_)
    adapter = distiller.terms["adapted"].adapters[0]
    assert (adapter.student_channels, adapter.teacher_channels) == (4, 16)
    optimizer = torch.optim.Adam(distiller.student_parameters(), lr=1e-2)
    teacher_before = [p.clone() for p in teacher.parameters()]
    student_before = [p.clone() for p in distiller.student_parameters()]
    inputs = torch.rand(2, 3, 8, 8)
    first = distiller((inputs, None))
    optimizer.zero_grad()
    first.total.backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(student_before, distiller.student_parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters(), strict=True))
    assert distiller((inputs, None)).total < first.total


def test_teacher_stays_frozen_in_eval_mode_and_out_of_the_state_dict(dcgan):
    teacher, student, discriminator = dcgan
    with pytest.raises(ValueError, match="teacher and student are the same module"):
        Distiller(teacher, teacher, task="generator", terms={"output": 1.0})
    teacher.train().requires_grad_(True)
    terms_ = {"output": 1.0, "adapted": {"pairs": {"stem": "stem"}}}
    distiller = Distiller(teacher, student, task="generator", terms=terms_, discriminator=discriminator)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # someone switches it back: the distiller's train() puts it in eval mode again
    distiller.train()
    assert not teacher.training and student.training and discriminator.training
    distiller.eval()
    assert not teacher.training and not student.training

    state = distiller.state_dict()
    assert {key.split(".")[0] for key in state} == {"student", "discriminator", "terms"}
    assert {key for key in state if key.startswith("terms")} == {"terms.adapted.adapters.0.weight",
                                                                 "terms.adapted.adapters.0.bias"}  # fmt: skip
    assert all(not any(p is q for q in teacher.parameters()) for p in distiller.parameters())

    # A fresh distiller loaded from the state dict computes the same terms.
    torch.manual_seed(5)
    other = Distiller(teacher, models.build("dcgan_g", image_size=32, nz=8, ngf=4), task="generator", terms=terms_,
                      discriminator=models.build("dcgan_d", image_size=32, ndf=4)).eval()  # fmt: skip
    other.load_state_dict(state)
    noise = torch.randn(2, 8)
    torch.testing.assert_close(other((noise, None)).total, distiller((noise, None)).total)

    # .to() moves (here: casts) the teacher with the distiller.
    distiller.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64
    assert distiller.terms["adapted"].adapters[0].weight.dtype == torch.float64
    assert distiller((noise.double(), None)).total.dtype == torch.float32


def test_low_precision_models_give_float32_terms(dcgan):
    teacher, student, discriminator = dcgan
    pairs = {"blocks.1": "blocks.1"}
    terms_ = {"output": 1.0, "adapted": {"pairs": pairs}, "attention": {"pairs": pairs}, "adversarial": 1.0}
    distiller = Distiller(teacher, student, task="generator", terms=terms_, discriminator=discriminator)
    distiller.to(torch.bfloat16)
    terms = distiller((torch.randn(2, 8, dtype=torch.bfloat16), None))
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in terms.values())
    terms.total.backward()
    assert distiller.terms["adapted"].adapters[0].weight.grad.dtype == torch.bfloat16


def test_channels_come_from_an_example_batch_when_layers_do_not_tell():
    class ConcatBlock(nn.Module):  # registers a 2-channel conv last but outputs 5 channels
        def __init__(self):
            super().__init__()
            self.wide, self.narrow = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1)

        def forward(self, images):
            return torch.cat([self.wide(images), self.narrow(images)], 1)

    teacher, student = nn.Sequential(ConcatBlock(), nn.Conv2d(5, 3, 1)), nn.Sequential(ConcatBlock())
    student.append(nn.Conv2d(5, 3, 1))
    options = dict(task="image2image", terms={"adapted": {"pairs": {"0": "0"}}})
    guessed = Distiller(teacher, student, **options)
    assert declared_channels(student, "0") == 2
    batch = (torch.randn(1, 3, 4, 4), None)
    with pytest.raises(ValueError, match=r"maps 2 to 2 channels.*student '0' \(1, 5, 4, 4\).*pass example_batch"):
        guessed(batch)
    probed = Distiller(teacher, student, example_batch=batch, **options)
    adapter = probed.terms["adapted"].adapters[0]
    assert (adapter.student_channels, adapter.teacher_channels) == (5, 5)
    assert probed(batch)["adapted"] > 0 and student.training
    with pytest.raises(ValueError, match="cannot tell how many channels student module '0'.*example_batch"):
        Distiller(teacher, nn.Sequential(nn.Identity(), nn.Conv2d(3, 3, 1)), **options)


def test_wrapped_students_are_tapped_by_the_bare_paths():
    teacher, student = sequential_pair()
    distiller = Distiller(teacher, nn.DataParallel(student), task="image2image",
                          terms={"attention": {"pairs": {"1": "1"}}})  # fmt: skip
    inputs = torch.rand(1, 3, 4, 4)
    expected = attention_transfer_ref(student[1](student[0](inputs)), teacher[1](teacher[0](inputs)))
    torch.testing.assert_close(distiller((inputs, None))["attention"], expected)


def test_lpips_term_plumbing_with_a_random_backbone(monkeypatch, tmp_path, dcgan):
    # Plumbing only: a random AlexNet state dict stands in for the published file (its hash prefix patched in).
    teacher, student, _ = dcgan
    options = dict(task="generator", terms={"lpips": 1.0})
    monkeypatch.delenv("GANKD_LPIPS_BACKBONE", raising=False)
    with pytest.raises(MetricWeightsError, match="alexnet-owt-7be5be79.pth"):
        Distiller(teacher, student, **options)
    backbone = tmp_path / "random-alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    digest = weights.sha256_of(backbone)
    monkeypatch.setitem(weights.LPIPS_BACKBONES, "alex", weights.WeightsFile(backbone.name, digest, "X", "test"))
    distiller = Distiller(teacher, student, task="generator", terms={"lpips": {"weights_path": backbone}})
    noise = torch.randn(2, 8)
    terms = distiller((noise, None))
    expected = perceptual.lpips_distance(student(noise), teacher(noise), weights_path=backbone).mean()
    torch.testing.assert_close(terms["lpips"], expected)
    terms.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert distiller.state_dict().keys() == {f"student.{key}" for key in student.state_dict()}


# ------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(terms={"outptu": 1}), ValueError, "unknown loss term 'outptu'; valid terms for image outputs: adapted, "),
        (dict(terms={"output": -1.0}), ValueError, "weight of 'output' must be a finite number >= 0, got -1.0"),
        (dict(terms={"output": "1"}), TypeError, "weight of 'output' must be a number"),
        (dict(terms={"output": 0.0}), ValueError, "terms select no loss term"),
        (dict(terms=["output"]), TypeError, "terms must be a dict of term name -> weight"),
        (dict(task="gan"), ValueError, "task must be one of 'classifier', 'generator', 'image2image', 'translation'; "
                                       "got 'gan'"),
        (dict(terms={"kd": 1.0}), ValueError, "loss term 'kd' compares logits, but this task's models output image"),
        (dict(terms={"ce": 1.0}), ValueError, "loss term 'ce' compares logits"),
        (dict(task="classifier", terms={"ground_truth": 1.0}), ValueError, "'ground_truth' compares image, but"),
        (dict(terms={"output": {"kind": "huber"}}), ValueError, "kind must be one of 'l1', 'mse'"),
        (dict(terms={"output": {"knid": "l1"}}), TypeError, "term 'output': .*'knid'.*valid options: weight, kind"),
        (dict(terms={"output": {"impl": "triton"}}), ValueError, "impl is set once for all terms"),
        (dict(terms={"feature": {"kind": "l2", "pairs": {"stem": "stem"}}}), ValueError, "kind must be one of 'mse'"),
        (dict(terms={"adversarial": {"loss": "wgan"}}), ValueError, "GAN loss mode must be one of"),
        (dict(task="classifier", terms={"kd": {"temperature": 0}}), ValueError, "temperature must be > 0"),
        (dict(terms={"attention": {"p": -1, "pairs": {"stem": "stem"}}}), ValueError, "'attention' term: p must be"),
        (dict(impl="cuda"), ValueError, "impl must be one of"),
        (dict(terms={"adversarial": 1.0}), ValueError, "'adversarial' term needs a discriminator"),
        (dict(conditional_discriminator=True), ValueError, "conditional_discriminator=True needs a discriminator"),
        (dict(terms={"attention": 1.0}), ValueError, "'attention' term needs pairs="),
        (dict(terms={"adapted": {"pairs": {"blocks.9": "stem"}}}), ValueError, "student .* no module at path 'blocks"),
        (dict(terms={"adapted": {"pairs": {"stem": "stme"}}}), ValueError, "teacher .* path 'stme'; closest: 'stem'"),
        (dict(terms={"feature": {"pairs": ["stem"]}}), TypeError, "pairs of 'feature' must be a dict"),
        (dict(teacher=None), ValueError, "the 'output' term needs a teacher; pass teacher="),
        (dict(student="dcgan_g"), TypeError, "student must be a torch.nn.Module"),
    ],
)  # fmt: skip
def test_construction_rejects_bad_input(dcgan, options, error, message):
    teacher, student, _ = dcgan
    arguments = dict(teacher=teacher, student=student, task="generator", terms={"output": 1.0}) | options
    with pytest.raises(error, match=message):
        Distiller(**arguments)


def test_class_conditional_discriminator_must_be_used_conditionally():
    generator = models.build("dcgan_g", image_size=16, nz=4, ngf=2, num_classes=3)
    discriminator = models.build("dcgan_d", image_size=16, ndf=2, num_classes=3)
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\).*gan.conditional: true"):
        Distiller(None, generator, task="generator", terms={"adversarial": 1.0}, discriminator=discriminator)
    distiller = Distiller(None, generator, task="generator", terms={"adversarial": 1.0}, discriminator=discriminator,
                          conditional_discriminator=True)  # fmt: skip
    assert distiller((torch.randn(2, 4), torch.tensor([0, 2])))["adversarial"] > 0


def test_shape_mismatches_are_reported_at_the_first_forward(dcgan):
    teacher, student, _ = dcgan
    noise = torch.randn(2, 8)
    channels = Distiller(teacher, student, task="generator", terms={"feature": {"pairs": {"stem": "stem"}}})
    message = r"'feature' term needs equal channels, got student 'stem' \(2, 16, 4, 4\) and teacher 'stem' "
    with pytest.raises(ValueError, match=message + r"\(2, 64, 4, 4\); use the 'adapted' term"):
        channels((noise, None))
    assert no_hooks(teacher, student)
    spatial = Distiller(teacher, student, task="generator", terms={"attention": {"pairs": {"stem": "blocks.0"}}})
    with pytest.raises(ValueError, match=r"'attention' term needs .* equal batch and spatial sizes.*\(2, 32, 8, 8\)"):
        spatial((noise, None))
    wide_teacher = models.build("dcgan_g", image_size=32, nz=8, ngf=4, channels=1)
    output = Distiller(wide_teacher, student, task="generator", terms={"output": 1.0})
    with pytest.raises(ValueError, match=r"student output \(2, 3, 32, 32\) with teacher output \(2, 1, 32, 32\)"):
        output((noise, None))


def test_bad_batches_are_reported(dcgan):
    teacher, student, discriminator = dcgan
    generator = Distiller(teacher, student, task="generator", terms={"output": 1.0})
    with pytest.raises(TypeError, match=r"a 'generator' batch is a pair \(noise, labels\).*got tensor of shape"):
        generator(torch.randn(2, 8))
    with pytest.raises(TypeError, match="labels must be a tensor or None, got list"):
        generator((torch.randn(2, 8), [0, 1]))
    with pytest.raises(ValueError, match="discriminator_loss needs a discriminator"):
        generator.discriminator_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    with_discriminator = Distiller(teacher, student, task="generator", terms={"output": 1.0},
                                   discriminator=discriminator)  # fmt: skip
    with pytest.raises(ValueError, match="discriminator_loss needs an adversarial term"):
        with_discriminator.discriminator_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    teacher_i2i, student_i2i = sequential_pair()
    paired = Distiller(teacher_i2i, student_i2i, task="image2image", terms={"ground_truth": 1.0})
    with pytest.raises(ValueError, match="'ground_truth' term needs targets; the batch has None"):
        paired((torch.rand(1, 3, 4, 4), None))
    classifier = Distiller(models.build("small_cnn", width=2), models.build("small_cnn", width=1),
                           task="classifier", terms={"ce": 1.0})  # fmt: skip
    with pytest.raises(ValueError, match="'ce' term needs labels"):
        classifier((torch.rand(1, 1, 8, 8), None))
