"""Unlearning methods: one LightningModule subclass of :class:`UnlearningModule` per file."""

from .adversarial_samples import AdversarialSamples
from .base import DivergenceError, UnlearningModule
from .gradient_ascent import GradientAscent
from .gradient_ascent_descent import GradientAscentDescent
from .gradient_ascent_kl import GradientAscentKL
from .random_labels import RandomLabels

__all__ = [
    "UnlearningModule",
    "DivergenceError",
    "GradientAscent",
    "GradientAscentDescent",
    "GradientAscentKL",
    "AdversarialSamples",
    "RandomLabels",
]
