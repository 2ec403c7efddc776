"""SatImp: token reweighting by saturation and importance.

Yang, Wang, Huang, Liu, Zhang & Han, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning", ICML 2025 (arXiv:2505.11953), Section 5. Per token ``t`` of a forget sequence, with
``CE_t`` the token's cross-entropy and ``p_t = exp(-CE_t)``, the forget term is

    L_SatImp = -mean_t( p_t^beta1 * (1 - p_t)^beta2 * CE_t )     (the weight detached)

over the real target tokens. The *saturation* factor ``p^beta1`` (as in WGA) stops pushing on
tokens already forgotten; the *importance* factor ``(1 - p)^beta2`` damps tokens the model is
nearly certain of, whose ascent gradient would be the largest and least informative.

Where the defaults come from (the authors' code; the paper's hyper-parameter section was not
available to check, so no paper value is claimed here):

* ``beta1 = 5``, ``beta2 = 0.1``: the authors' repository, github.com/tmlr-group/SatImp at
  51314c05abe393801fb8134b78ef402b0c95e4e2, ``README.md`` ("The recommended hyper-parameters of
  SatImp method is beta1=5.0, beta2=0.1"; ``hyper_param`` is beta1 and ``beta`` is beta2 in its
  ``dataloader/dataloader_sat.py``). open-unlearning's port (added by the paper's first author,
  github.com/locuslab/open-unlearning at d3d7cf9e6b3c125d16687d4232680d8d83548f1a,
  ``configs/trainer/SatImp.yaml`` and ``src/trainer/unlearn/satimp.py``) uses ``beta2 = 1``, and
  the repository's own ``config/forget_sat.yaml`` 0.2: the later, explicit recommendation wins.
* NLL retain term weighted 0.1 against a forget weight of 1: the authors' ``satimp_gd`` loss
  (``forget + coeff * retain_nll``, ``coeff: 0.1`` in ``config/forget_sat.yaml``), and
  open-unlearning's ``community/methods/SatImp/README.md`` ("gamma=1.0 and alpha=0.1", forget to
  retain 10:1) and ``SatImp.__init__`` (``gamma=1.0, alpha=0.1``). open-unlearning's loss is
  ``gamma * forget + alpha * retain``, so gamma is our ``forget_weight`` and alpha our
  ``retain_weight``; its ``configs/trainer/SatImp.yaml`` ships the reverse (``gamma: 0.1``,
  ``alpha: 1.0``), against its own README and class in the same commit. The README's example run
  (``forget_loss=satimp``) has no retain term at all.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import satimp_loss
from ..validation import check_number
from .base import RetainTerm, UnlearningModule


class SatImp(UnlearningModule):
    """Gradient ascent with token weights ``p^beta1 * (1 - p)^beta2``.

    Args:
        beta1: exponent of the saturation weight ``p_t^beta1`` (authors' README and
            open-unlearning: 5.0).
        beta2: exponent of the importance weight ``(1 - p_t)^beta2`` (authors' README at
            tmlr-group/SatImp@51314c0: 0.1; open-unlearning's port: 1.0); 0 turns the method into
            WGA with ``beta = beta1``.
        retain_term: ``"nll"`` (the authors' ``satimp_gd`` and open-unlearning), ``"kl"`` or
            ``"none"`` (the authors' plain ``satimp``) on retain data; see
            :class:`UnlearningModule`.
        retain_weight: weight of the retain term against a forget weight of 1 (the authors'
            ``coeff`` and open-unlearning's README and class default ``alpha``: 0.1).
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        beta1: float = 5.0,
        beta2: float = 0.1,
        retain_term: RetainTerm = "nll",
        retain_weight: float = 0.1,
        **kwargs,
    ) -> None:
        check_number("beta1", beta1, low=0)
        check_number("beta2", beta2, low=0)
        super().__init__(
            model_name_or_path, retain_term=retain_term, retain_weight=retain_weight, **kwargs
        )
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return satimp_loss(self(batch), batch["labels"], beta1=self.beta1, beta2=self.beta2)
