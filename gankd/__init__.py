"""gankd — knowledge distillation for GAN generators and CNN classifiers, driven by fused Triton losses."""

__version__ = "0.1.0"
