"""lightning-unlearn: make a pre-trained language model forget documents, and measure it."""

from . import methods as _methods
from .methods import *  # noqa: F403 - the methods package's list (methods.METHODS) is the one list
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
    *_methods.__all__,
    "UnlearningDataModule",  # noqa: F405 - loaded on first use (_LAZY)
    "UnlearningWorkflow",
    "Measurement",
    "LoraSettings",
    "load_causal_lm",
    "load_tokenizer",
]
