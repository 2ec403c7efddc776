"""Unlearning methods: one LightningModule subclass of :class:`UnlearningModule` per file."""

from .adversarial_samples import AdversarialSamples
from .base import DivergenceError, UnlearningModule
from .ce_u import CrossEntropyUnlearning
from .dpo import PreferenceUnlearning
from .gradient_ascent import GradientAscent
from .gradient_ascent_descent import GradientAscentDescent
from .gradient_ascent_kl import GradientAscentKL
from .npo import NegativePreferenceOptimization
from .pdu import PrimalDualUnlearning
from .random_labels import RandomLabels
from .rmu import RepresentationMisdirection
from .satimp import SatImp
from .simnpo import SimNPO
from .undial import UNDIAL
from .wga import WeightedGradientAscent
from .whos_harry_potter import WhosHarryPotter

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
    "WeightedGradientAscent",
    "SatImp",
    "CrossEntropyUnlearning",
    "PrimalDualUnlearning",
]
