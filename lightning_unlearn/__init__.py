"""lightning-unlearn: make a pre-trained language model forget documents, and measure it."""

from .methods import (
    AdversarialSamples,
    DivergenceError,
    GradientAscent,
    GradientAscentDescent,
    GradientAscentKL,
    RandomLabels,
    UnlearningModule,
)
from .models import LoraSettings, load_causal_lm, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "UnlearningModule",
    "DivergenceError",
    "GradientAscent",
    "GradientAscentDescent",
    "GradientAscentKL",
    "AdversarialSamples",
    "RandomLabels",
    "LoraSettings",
    "load_causal_lm",
    "load_tokenizer",
]
