"""Cross-entropy unlearning (CE-U).

Bo Yang, "CE-U: Cross Entropy Unlearning", 2025 (arXiv:2503.01224). At each forget position the
target distribution is the model's own prediction with the true next token removed,

    q_t = softmax(z_t.detach()) with z_{t, y_t} set to -inf,
    L_CE-U = mean_t CE(q_t, softmax(z_t)) = -mean_t sum_v q_{t,v} log softmax(z_t)_v,

so the gradient on the logits is ``softmax(z_t) - q_t``: it moves the true token's probability to
the other tokens in proportion to their current share, and stays bounded where gradient ascent's
vanishes (confident model) or explodes (unlikely token).

Where the defaults come from (the paper's text was not available to check beyond its abstract):

* ``skip_first = 1``: the first target token of each sequence is left out of the loss, the trick
  of the footnote in the paper's "Training Settings" as cited by the implementation the paper's
  author co-wrote for open-unlearning (github.com/locuslab/open-unlearning at
  d3d7cf9e6b3c125d16687d4232680d8d83548f1a, ``src/trainer/unlearn/ceu.py``,
  ``ignore_first_n_answer_tokens=1``, also ``configs/trainer/CEU.yaml``; commit d33c476,
  co-authored by Bo Yang). It counts the first targets on the unshifted labels, so a sequence
  whose very first token is a target skips one predicted token fewer than here; with a masked
  prompt, as in TOFU, the two agree.
* ``retain_term = "none"``: that trainer (``CEU``) trains on the forget batch alone, with no retain
  data and no reference model.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import ce_u_loss
from ..validation import check_number
from .base import UnlearningModule


class CrossEntropyUnlearning(UnlearningModule):
    """Cross-entropy to the model's own prediction with the true token removed.

    Args:
        skip_first: number of real target tokens at the start of each sequence left out of the
            loss (open-unlearning's ``CEU.yaml``, after the paper's training settings: 1).
        retain_term: ``"none"`` (open-unlearning's ``CEU``; the base's default), ``"nll"`` or
            ``"kl"`` on retain data, weighted by ``retain_weight``; see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(self, model_name_or_path: str, *, skip_first: int = 1, **kwargs) -> None:
        check_number("skip_first", skip_first, low=0, integer=True)
        super().__init__(model_name_or_path, **kwargs)
        self.skip_first = skip_first

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return ce_u_loss(self(batch), batch["labels"], skip_first=self.skip_first)
