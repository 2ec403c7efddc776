"""lightning-unlearn: make a pre-trained language model forget documents, and measure it."""

from .methods import (
    UNDIAL,
    AdversarialSamples,
    DivergenceError,
    GradientAscent,
    GradientAscentDescent,
    GradientAscentKL,
    NegativePreferenceOptimization,
    PreferenceUnlearning,
    RandomLabels,
    RepresentationMisdirection,
    SimNPO,
    UnlearningModule,
    WhosHarryPotter,
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
    "NegativePreferenceOptimization",
    "SimNPO",
    "RepresentationMisdirection",
    "UNDIAL",
    "WhosHarryPotter",
    "PreferenceUnlearning",
    "LoraSettings",
    "load_causal_lm",
    "load_tokenizer",
]
