"""Unlearning methods: one LightningModule subclass of :class:`UnlearningModule` per file."""

from .adversarial_samples import AdversarialSamples
from .base import DivergenceError, UnlearningModule
from .ce_u import CrossEntropyUnlearning
from .document_targets import DocumentTargetMatching
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

#: every built-in method by its short name: the one list the planner (``--method``), the package's
#: top level and the benchmarks read. A built-in method is its file, its entry here, its preset
#: under ``configs/methods/`` and its row in the method tests; a method of your own needs none of
#: them: name it by its dotted class path.
METHODS: dict[str, type[UnlearningModule]] = {
    "ga": GradientAscent,
    "ga_gd": GradientAscentDescent,
    "ga_kl": GradientAscentKL,
    "rl": RandomLabels,
    "as": AdversarialSamples,
    "npo": NegativePreferenceOptimization,
    "simnpo": SimNPO,
    "rmu": RepresentationMisdirection,
    "undial": UNDIAL,
    "whp": WhosHarryPotter,
    "dpo": PreferenceUnlearning,
    "wga": WeightedGradientAscent,
    "satimp": SatImp,
    "ce_u": CrossEntropyUnlearning,
    "pdu": PrimalDualUnlearning,
    "dtm": DocumentTargetMatching,
}

__all__ = ["UnlearningModule", "DivergenceError", *(cls.__name__ for cls in METHODS.values())]
