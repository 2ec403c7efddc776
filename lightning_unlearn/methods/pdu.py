"""Primal-dual unlearning (PDU): logit flattening under a hard retain constraint.

Entesari, Hatami, Khaziev, Ramakrishna & Fazlyab, "Constrained Entropic Unlearning: A Primal-Dual
Framework for Large Language Models", NeurIPS 2025 (arXiv:2506.05314). Unlearning is the
constrained problem

    min_theta  L_fgt = mean_t (max_v z_{t,v} - mean_v z_{t,v})^2      (forget data; z the logits)
    s.t.       L_rtn <= eps                                           (retain data, NLL or KL)

whose forget term, the logit-margin flattening loss, is zero exactly when the prediction is
uniform. It is solved on the Lagrangian ``L_fgt + lambda * L_rtn``: a gradient step on the weights
with ``lambda`` fixed, then a projected dual-ascent step

    lambda <- max(0, lambda + eta * (L_rtn - eps))

so the retain weight grows while the constraint is violated and decays while it holds.

Where the defaults come from: the implementation the paper's first author wrote for
open-unlearning (github.com/locuslab/open-unlearning at d3d7cf9e6b3c125d16687d4232680d8d83548f1a:
``src/trainer/unlearn/pdu.py``, ``configs/trainer/PDU.yaml``, ``community/methods/PDU/run.sh``;
commits fd825ea and 0e57336 by Taha Entesari). The paper's own text was not available to check
beyond its abstract (a summary of its Section 3 gives the retain loss as the cross-entropy on
retain data and ``eps = (1 + alpha) * L_rtn(original)``).

* ``retain_term = "nll"``: ``PDU.yaml`` inherits ``retain_loss_type: NLL`` from ``GradDiff.yaml``.
* ``dual_update = "step"``: ``PDU.yaml`` ``dual_update_upon: "step"``, and every run in ``run.sh``.
* ``dual_init = 1`` (the start of ``retain_weight``) and ``dual_lr = 1``: ``PDU.yaml``'s
  ``alpha: 1.0`` (the retain preference that the dual step moves) and ``dual_step_size: 1.0``.
  The reported runs (``run.sh``) use 100 and 5 on TOFU, 50 and 1 on MUSE: scale-dependent
  settings that ``configs/methods/pdu.yaml`` sets for the demo.
* ``dual_warmup_epochs = 0``: ``pdu.py``'s class default; ``PDU.yaml`` and the reported runs
  use 5 (TOFU) and 3 (MUSE). Kept at 0 because the warm-up counts epochs: with 5, a run shorter
  than five epochs (the demo's, which stops within the first) would never move ``lambda``.
* ``retain_bound`` has no default, as ``PDU.yaml``'s ``retain_loss_eps: ???`` (required).

How ``lambda`` is wired into the base class (whose ``training_step`` is unchanged):

* ``lambda`` is the persistent float64 buffer ``dual_lambda``: it is in ``state_dict()`` and so in
  every checkpoint (a resumed run continues with the same ``lambda``), and it moves with the module.
  It is logged as ``train/lambda``.
* ``retain_weight`` is a property that reads ``lambda``: the base's
  ``loss = forget + retain_weight * retain`` uses it with no other change.
* :meth:`retain_loss` calls the base's and adds the detached value to a running sum and count
  (persistent buffers too, so an epoch's partial sums survive a resume).
* ``dual_update="step"``: the update runs in ``on_before_optimizer_step``, once per optimizer step,
  from the retain term of the step just taken (the mean over its micro-batches under gradient
  accumulation). Not in ``on_train_batch_end``: Lightning calls the callbacks' hook (where
  ``ModelCheckpoint`` writes) before the module's, so an update there would be missing from that
  step's checkpoint and a resumed run would diverge.
* ``dual_update="epoch"``: one update in ``on_train_epoch_end`` from the mean retain term of the
  epoch's training steps -- the retain batches the epoch trained on, not a separate pass over the
  whole retain set after the epoch (as open-unlearning's implementation does). A run resumed from a
  checkpoint written at an epoch's last batch applies that epoch's update before its first batch.
* Under DDP / DeepSpeed the retain losses are summed over ranks first: every rank holds the same
  ``lambda``.

With ``*-true`` half precision (``bf16-true``), Lightning casts every floating buffer, ``lambda``
too; the shipped trainer presets use ``*-mixed``, which keeps it in float64.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..losses import dual_update, logit_flatness
from ..validation import check_number
from .base import RetainTerm, UnlearningModule


class PrimalDualUnlearning(UnlearningModule):
    """Logit-margin flattening on forget data, the retain loss bounded by a learnt multiplier.

    Args:
        retain_bound: the constraint's bound ``eps`` on the retain loss (mean per token, nats).
            Set it a little above the original model's retain loss (paper: ``(1 + alpha)`` times
            it); open-unlearning's runs used 0.3 on TOFU, 1.5 / 0.1 on MUSE News / Books.
        dual_init: start value of the retain weight ``lambda`` (open-unlearning's ``PDU.yaml``
            ``alpha``: 1.0; the paper's runs in ``run.sh`` 100 on TOFU, 50 on MUSE, because the
            flattening loss is large).
        dual_lr: dual step size ``eta`` (``PDU.yaml`` ``dual_step_size``: 1.0; ``run.sh`` 5 on
            TOFU, 1 on MUSE); 0 keeps ``lambda`` fixed.
        dual_update: ``"step"`` (update ``lambda`` after every optimizer step: ``PDU.yaml`` and
            every run in ``run.sh``) or ``"epoch"`` (once per epoch, from the mean retain loss of
            its steps).
        dual_warmup_epochs: epochs at the start during which ``lambda`` stays at ``dual_init``
            (``pdu.py``'s default 0; ``PDU.yaml`` 5, ``run.sh`` 5 on TOFU and 3 on MUSE).
        retain_term: ``"nll"`` (``PDU.yaml``, via ``GradDiff.yaml``) or ``"kl"``: the constrained
            retain loss; ``"none"`` is refused (there would be nothing to constrain).
        **kwargs: see :class:`UnlearningModule`; ``retain_weight`` is not accepted (it is
            ``lambda``).
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        retain_bound: float,
        dual_init: float = 1.0,
        dual_lr: float = 1.0,
        dual_update: Literal["step", "epoch"] = "step",
        dual_warmup_epochs: int = 0,
        retain_term: RetainTerm = "nll",
        **kwargs,
    ) -> None:
        check_number("retain_bound", retain_bound, low=0)
        check_number("dual_init", dual_init, low=0)
        check_number("dual_lr", dual_lr, low=0)
        if dual_update not in ("step", "epoch"):
            raise ValueError(f"dual_update must be 'step' or 'epoch', got {dual_update!r}")
        check_number("dual_warmup_epochs", dual_warmup_epochs, low=0, integer=True)
        if retain_term == "none":
            raise ValueError(
                "PrimalDualUnlearning constrains the retain loss: retain_term must be 'nll' or "
                "'kl', got 'none'"
            )
        if "retain_weight" in kwargs:
            raise ValueError(
                "PrimalDualUnlearning learns its retain weight (the dual variable lambda): set "
                "dual_init, its start value, instead of retain_weight"
            )
        super().__init__(
            model_name_or_path, retain_term=retain_term, retain_weight=dual_init, **kwargs
        )
        self.retain_bound = float(retain_bound)
        self.dual_lr = float(dual_lr)
        self.dual_update = dual_update
        self.dual_warmup_epochs = dual_warmup_epochs
        self.register_buffer("dual_lambda", torch.tensor(float(dual_init), dtype=torch.float64))
        self.register_buffer("dual_retain_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("dual_retain_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("dual_retain_epoch", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ lambda is the weight
    @property
    def retain_weight(self) -> float:
        """The retain term's weight: the dual variable ``lambda``."""
        return float(self.dual_lambda)

    @retain_weight.setter
    def retain_weight(self, value: float) -> None:
        # the base's __init__ stores its start value (dual_init) before the buffer exists
        if not float(value) >= 0:
            raise ValueError(f"retain_weight (lambda) must be >= 0, got {value}")
        if "dual_lambda" in self._buffers:
            self.dual_lambda.fill_(float(value))

    # ------------------------------------------------------------------ the terms
    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return logit_flatness(self(batch), batch["labels"])

    def retain_loss(self, batch: dict[str, Tensor]) -> Tensor:
        loss = super().retain_loss(batch)
        trainer = self._trainer
        if trainer is not None and trainer.training:
            with torch.no_grad():
                self.dual_retain_sum += loss.detach().to(torch.float64)
                self.dual_retain_count += 1
                self.dual_retain_epoch.fill_(self.current_epoch)
        return loss

    # ------------------------------------------------------------------ the dual step
    @torch.no_grad()
    def apply_dual_update(self) -> None:
        """``lambda <- max(0, lambda + dual_lr * (mean recorded retain loss - retain_bound))`` and
        clear the record; inside the warm-up epochs only the record is cleared."""
        totals = torch.stack([self.dual_retain_sum, self.dual_retain_count.to(torch.float64)])
        if self._trainer is not None:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if int(self.dual_retain_epoch) >= self.dual_warmup_epochs:
            self.dual_lambda.copy_(
                dual_update(
                    self.dual_lambda,
                    totals[0] / totals[1],
                    bound=self.retain_bound,
                    lr=self.dual_lr,
                )
            )
        self.dual_retain_sum.zero_()
        self.dual_retain_count.zero_()

    def _pending(self) -> bool:
        return int(self.dual_retain_count) > 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # resumed from a checkpoint written at an epoch's last batch: that epoch's update is due
        if (
            self.dual_update == "epoch"
            and self._pending()
            and int(self.dual_retain_epoch) != self.current_epoch
        ):
            self.apply_dual_update()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.dual_update == "step" and self._pending():
            self.apply_dual_update()

    def on_train_epoch_end(self) -> None:
        if self.dual_update == "epoch" and self._pending():
            self.apply_dual_update()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        size = batch["forget"]["input_ids"].size(0)
        self.log("train/lambda", float(self.dual_lambda), batch_size=size)
