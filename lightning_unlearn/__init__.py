"""lightning-unlearn: make a pre-trained language model forget documents, and measure it."""

from .methods import (
    UNDIAL,
    AdversarialSamples,
    CrossEntropyUnlearning,
    DivergenceError,
    GradientAscent,
    GradientAscentDescent,
    GradientAscentKL,
    NegativePreferenceOptimization,
    PreferenceUnlearning,
    PrimalDualUnlearning,
    RandomLabels,
    RepresentationMisdirection,
    SatImp,
    SimNPO,
    UnlearningModule,
    WeightedGradientAscent,
    WhosHarryPotter,
)
from .models import LoraSettings, load_causal_lm, load_tokenizer
from .version import __version__ as __version__
from .workflow import Measurement, UnlearningWorkflow

#: names importable from the top level but loaded on first use (``datasets`` takes seconds to
#: import, which the CLI's verbs that do not read data should not pay)
_LAZY = {"UnlearningDataModule": "lightning_unlearn.data"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_unlearn' has no attribute {name!r}")


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
    "UnlearningDataModule",
    "UnlearningWorkflow",
    "Measurement",
    "LoraSettings",
    "load_causal_lm",
    "load_tokenizer",
]
