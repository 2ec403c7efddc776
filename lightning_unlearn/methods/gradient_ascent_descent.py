"""Gradient ascent on the forget set + gradient descent on retain data (GA+GD).

Yao et al., ACL 2024 (arXiv:2402.15159), "GA+GD": the forget term of gradient ascent plus the
language-modelling NLL on retain data (the base class's ``retain_term="nll"``, this class's
default). The paper found it the most robust to hyper-parameters when the retain data is
in-distribution (same domain as the forget set). In-distribution vs general retain data is a data
choice (see ``configs/data/``), not a separate class.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import token_nll
from .base import RetainTerm, UnlearningModule


class GradientAscentDescent(UnlearningModule):
    """GA on forget data, NLL (gradient descent) on retain data.

    Args:
        retain_term: the retain term (paper: ``"nll"``); see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(self, model_name_or_path: str, *, retain_term: RetainTerm = "nll", **kwargs):
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -token_nll(self(batch), batch["labels"])
