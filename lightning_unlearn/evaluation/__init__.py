"""Measuring unlearning: the metrics seam (one class per metric), perplexity and membership
inference per split, verbatim memorisation, the approximate-retrain stop, the report, and
downstream utility through lm-eval."""

from .base import (
    GenerationMetric,
    MetricResult,
    ModelMetric,
    SplitTexts,
    TokenMetric,
    UnlearningMetric,
)
from .callbacks import ApproximateRetrainStopping
from .documents import DocumentCollector, SplitDocuments
from .downstream import evaluate_downstream, main_evaluate
from .memorisation import (
    Memorisation,
    VerbatimMemorisation,
    exact_match_length,
    lcs_length,
    rouge_l_f1,
    verbatim_memorisation,
)
from .metrics import EVAL_SPLITS, UnlearningEvaluator, compute_token_metrics, default_metrics
from .mia import (
    MIA_SCORES,
    MembershipInference,
    loss_score,
    mia_scores,
    min_k_plus_plus_score,
    min_k_score,
    roc_auc,
    tpr_at_fpr,
    zlib_score,
)
from .mia_attacks import (
    GradientNormMembership,
    ParameterGradientNormMembership,
    ReferenceMembership,
)
from .muse import KnowMem, PrivLeak
from .perplexity import Perplexity
from .report import build_report, format_table, write_report
from .results import EmptyApproximateSplitError, approximate_target, normalise_metrics
from .runner import evaluate_model, evaluate_splits
from .targets import DocumentStopping, DocumentTargeting, DocumentTargets
from .tofu import TOFU
from .wmdp import WMDP

__all__ = [
    "EVAL_SPLITS",
    "MIA_SCORES",
    "ApproximateRetrainStopping",
    "DocumentStopping",
    "DocumentTargeting",
    "DocumentTargets",
    "DocumentCollector",
    "EmptyApproximateSplitError",
    "GenerationMetric",
    "GradientNormMembership",
    "ParameterGradientNormMembership",
    "KnowMem",
    "MembershipInference",
    "Memorisation",
    "MetricResult",
    "ModelMetric",
    "Perplexity",
    "PrivLeak",
    "ReferenceMembership",
    "SplitDocuments",
    "SplitTexts",
    "TOFU",
    "TokenMetric",
    "UnlearningEvaluator",
    "UnlearningMetric",
    "VerbatimMemorisation",
    "WMDP",
    "compute_token_metrics",
    "default_metrics",
    "evaluate_model",
    "approximate_target",
    "build_report",
    "evaluate_downstream",
    "evaluate_splits",
    "exact_match_length",
    "format_table",
    "lcs_length",
    "loss_score",
    "main_evaluate",
    "mia_scores",
    "min_k_plus_plus_score",
    "min_k_score",
    "normalise_metrics",
    "rouge_l_f1",
    "roc_auc",
    "tpr_at_fpr",
    "verbatim_memorisation",
    "write_report",
    "zlib_score",
]
