"""Per-document target matching (DTM): each forget document moved into its own band, not past it.

This library's own method (no paper): the methods of the literature push every forget document
with one one-sided loss and stop on one population number, so the documents the model knew best
stay the most recognisable and others overshoot. Here each forget document ``d`` has a target
mean token log-likelihood ``t(d)`` -- an estimate of where retraining without the forget set would
leave it, from a never-seen reference model or from the approximate split's quantiles
(:mod:`lightning_unlearn.evaluation.targets`) -- and a band ``[t(d) - tol, t(d) + tol]``.

Forget term, per forget window ``w`` of document ``d`` with mean token log-likelihood
``l(w)`` under the model being trained (:func:`~lightning_unlearn.losses.banded_target_loss`)::

    x = max(|l(w) - t(d)| - tol, 0)
    loss(w) = x^2 / (2 tol)      (x <= tol)
              x - tol / 2        (x >  tol)
    d loss / d l = sign(l - t) * min(x / tol, 1)

averaged over the batch's windows. Derivation: the loss is a Huber function of the distance to
the band. Far from it, the gradient is gradient ascent on a remembered document (``l > t``: the
sign is +1, minimising pushes ``l`` down) and gradient descent on an overshot one (pulled back
up), each with the weight of one window, as in GA+GD; inside the band it is 0 (the document
leaves the term); in between it fades linearly, so the step that brings a document to its band
does not carry it through. Unlike gradient ascent the term is bounded below (by 0), so running
it longer cannot run away. The retain term is the usual one (``retain_term``, default the NLL on
retain data, as GA+GD).

The stop is per document too (:class:`~lightning_unlearn.evaluation.targets.DocumentStopping`:
every document inside its band, or the fraction inside no longer rising). The tolerance is fixed
before any run from the approximate split alone (half the target estimate's own error there); no
retrained model informs a target, the tolerance or a hyper-parameter.

Batching: give the forget term every forget document in each step (``data.batch_size`` = the
forget split's windows, ``data.retain_batch_size`` a usual retain batch), so that each step moves
every document towards its own band, pulling an overshot one back in the same step that pushes a
remembered one down. With a batch of a few documents the others move only as the collateral of
the shared weights, unseen by the loss until their turn, and most of them end past their band
(``docs/results.md``, *Document by document*: the rows DTM+ref and DTM+ref/all).

Run it through the workflow, which builds the targets::

    workflow = UnlearningWorkflow(documents=DocumentTargeting(reference="path/to/never-seen"))
    workflow.run(trainer, DocumentTargetMatching("path/to/model"), datamodule)
"""

from __future__ import annotations

from torch import Tensor

from ..losses import banded_target_loss, sequence_nll
from .base import RetainTerm, UnlearningModule


class DocumentTargetMatching(UnlearningModule):
    """Each forget document moved into its band around its own target (see the module docstring).

    Args:
        retain_term: the retain term (default ``"nll"``, as GA+GD); see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(self, model_name_or_path: str, *, retain_term: RetainTerm = "nll", **kwargs):
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        targets = self.document_targets
        if targets is None:
            raise RuntimeError(
                "DocumentTargetMatching needs each forget document's target: run it through "
                "UnlearningWorkflow(documents=DocumentTargeting(...)), which sets module.document_targets"
            )
        doc_index = batch.get("doc_index")
        if doc_index is None:
            raise ValueError(
                "DocumentTargetMatching needs the forget batches' 'doc_index' (which document a "
                "window belongs to): train on document windows (packing: false)"
            )
        value = -sequence_nll(self(batch), batch["labels"])
        target = targets.lookup(doc_index).to(value.dtype)
        return banded_target_loss(value, target, targets.tolerance).mean()
