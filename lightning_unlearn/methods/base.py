"""The base class of every unlearning method.

``UnlearningModule.training_step`` is written once: it computes the method's forget term and, when
the configuration has one, its retain term, weights and sums them, and logs each part. A method
(or a researcher's subclass) overrides only what differs: usually :meth:`forget_loss`, and
``forget_needs_reference = True`` when its forget term compares against the frozen original.

The retain term lives here, once: ``retain_term`` is ``"none"``, ``"nll"`` (gradient descent on
retain data) or ``"kl"`` (``KL(P_ref || P_theta)`` to the frozen original); each method's class
sets its paper's default. Whether a run uses retain data (:attr:`UnlearningModule.uses_retain`)
and whether it needs a reference model (:attr:`UnlearningModule.needs_reference`) follow from the
instance's configuration; the CLI's token budget, the data module and the memory planner all read
them from there.

The common objective (Yao et al., ACL 2024, "Machine Unlearning of Pre-trained Large Language
Models", arXiv:2402.15159)::

    L = forget_weight * forget_term(forget batch) + retain_weight * retain_term(retain batch)

The class keeps what every method shares (the step, the retain term, the reference model, the
optimiser); each other concern is a collaborator in a module of its own:

- :mod:`.model_builder`: loading the model, its reference and tokenizer, LoRA, export;
- :mod:`.output_heads`: the architectures whose KL retain term is made from hidden states;
- :mod:`.sequential_backward`: the early forget backward under DDP and DeepSpeed;
- :mod:`.guards`: the checks of batches, losses, gradients and the forget NLL;
- :mod:`.lr_schedule`: the warm-up and cosine schedule.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from ..evaluation.metrics import EVAL_SPLITS, UnlearningEvaluator
from ..losses import RETAIN_TERMS, check_retain_term, retain_term_loss
from ..models import LoraSettings, eval_mode, model_inputs
from ..validation import check_number
from .evaluation_steps import EvaluationSteps
from .guards import DivergenceError, ForgetNLLGuard, batch_part, check_finite, check_gradients
from .lr_schedule import check_schedule, warmup_schedule
from .model_builder import ModelBuilder
from .output_heads import kl_from_hidden_states, linear_heads
from .sequential_backward import BackwardOrder, SequentialBackward

#: the retain terms the base class computes (``"none"``: no retain data is used)
RetainTerm = Literal["none", "nll", "kl"]

log = logging.getLogger(__name__)


def _from_builder(name: str) -> property:
    """A read-only attribute of the module that is ``module.builder.<name>``."""
    return property(lambda self: getattr(self.builder, name), doc=f"``builder.{name}``")


class UnlearningModule(EvaluationSteps, LightningModule):
    """Shared machinery of all unlearning methods.

    Args:
        model_name_or_path: the model to unlearn: a local directory with a Hugging Face checkpoint, a ``.gguf``
            file, or a Hugging Face hub id.
        gguf_file: name of a GGUF file inside ``model_name_or_path`` when it is a folder.
        tokenizer: where to load the tokenizer from (defaults to ``model_name_or_path``); exported with the model.
        trust_remote_code: allow model code from the hub to run. Off by default: only enable it for
            repositories you trust.
        dtype: weight dtype to load (``"float32"``, ``"bf16"``, ``"fp16"``); ``None`` keeps the
            checkpoint's.
        lora: train low-rank adapters instead of all weights (peft). With LoRA the reference model is
            the same module with adapters disabled, so no second copy of the weights exists.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        forget_weight: weight of the forget term.
        retain_term: the retain term on retain data: ``"none"`` (no retain data), ``"nll"``
            (gradient descent: NLL of the retain text, GA+GD / NPO+RT) or ``"kl"``
            (``KL(P_ref || P_theta)`` to the frozen original, GA+KL / NPO+KL). Each method's class
            sets its paper's default.
        retain_weight: weight of the retain term (the paper's lambda; unused with ``"none"``).
        learning_rate: AdamW learning rate (paper: 2e-5 for full fine-tuning).
        weight_decay: AdamW weight decay (paper: 0).
        warmup_ratio: fraction of the total optimizer steps spent in linear warm-up (paper: 0.03).
        scheduler: learning-rate schedule after warm-up: ``"cosine"`` (paper) or ``"constant"``.
        max_forget_nll: stop with an error when the forget NLL (mean per token, in nats) exceeds
            this bound (gradient ascent running away destroys the model; a uniform guess over the
            vocabulary scores ``ln(vocab_size)``); ``None`` disables the guard.
        reference_model_name_or_path: a model to use as the frozen reference (KL, NPO, adversarial
            targets) instead of a copy of ``model_name_or_path``; it must have the same
            architecture (model type, vocabulary, hidden size).
        backward: ``"sequential"``: back-propagate the forget term as soon as it is computed, then
            the retain term, so the activations of one sequence are alive at a time (same
            gradients as one backward of the sum); ``"joint"``: one backward of the sum. ``None``
            (default): sequential, except joint under DeepSpeed and FSDP (``docs/cluster.md``).
    """

    #: the method's *forget term* compares against the frozen original model (a class fact; the
    #: retain term's need follows from ``retain_term``: see :attr:`needs_reference`)
    forget_needs_reference: ClassVar[bool] = False
    #: per-document targets and mask (:mod:`lightning_unlearn.evaluation.targets`; set by
    #: ``UnlearningWorkflow(documents=DocumentTargeting(...))``)
    document_targets: Any = None
    forget_mask: Any = None

    def __init__(
        self,
        model_name_or_path: str,
        *,
        gguf_file: str | None = None,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        dtype: str | None = None,
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        forget_weight: float = 1.0,
        retain_term: RetainTerm = "none",
        retain_weight: float = 1.0,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        scheduler: Literal["cosine", "constant"] = "cosine",
        max_forget_nll: float | None = None,
        reference_model_name_or_path: str | None = None,
        backward: BackwardOrder | None = None,
    ) -> None:
        super().__init__()
        self.backward_steps = SequentialBackward(backward)  # checks `backward` first
        check_number("learning_rate", learning_rate, low=0.0, strict=True)
        check_number("forget_weight", forget_weight, low=0.0)
        check_number("retain_weight", retain_weight, low=0.0)
        check_number("weight_decay", weight_decay, low=0.0)
        check_schedule(warmup_ratio, scheduler)
        check_retain_term(retain_term)
        self.forget_guard = ForgetNLLGuard(max_forget_nll)
        self.builder = ModelBuilder(
            str(model_name_or_path),
            gguf_file=gguf_file,
            tokenizer=tokenizer,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            reference=reference_model_name_or_path,
            lora=LoraSettings(**lora) if isinstance(lora, dict) else lora,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.retain_term = retain_term
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.warmup_ratio, self.scheduler_name = float(warmup_ratio), scheduler
        # an unset tokenizer is the model's own: left out of the hyper-parameters, so a logger that
        # merges them with the data module's (whose tokenizer is the model path) sees no conflict
        self.save_hyperparameters(ignore=["tokenizer"] if tokenizer is None else None)
        # built in configure_model() so ZeRO-3 / FSDP can shard at creation
        self.model: nn.Module | None = None
        self.reference: nn.Module | None = None
        self.evaluator = UnlearningEvaluator(EVAL_SPLITS)
        # the reference model is rebuilt from the original weights: keep it out of checkpoints
        self.strict_loading = False

    # the collaborators' settings, under the names of the constructor's arguments
    model_name_or_path = _from_builder("model_name_or_path")
    gguf_file = _from_builder("gguf_file")
    tokenizer_name_or_path = _from_builder("tokenizer")
    trust_remote_code = _from_builder("trust_remote_code")
    dtype_name = _from_builder("dtype")
    reference_model_name_or_path = _from_builder("reference")
    lora = _from_builder("lora")
    gradient_checkpointing = _from_builder("gradient_checkpointing")
    max_forget_nll = property(lambda self: self.forget_guard.bound, doc="the forget NLL's bound")

    # ------------------------------------------------------------------ what the run needs
    @property
    def uses_retain(self) -> bool:
        """This configuration trains on retain batches (``retain_term`` is not ``"none"``)."""
        return self.retain_term != "none"

    @property
    def needs_reference(self) -> bool:
        """This configuration compares against the frozen original model (its forget term, or a
        KL retain term). With LoRA the reference is the base with adapters disabled."""
        return self.forget_needs_reference or self.retain_term == "kl"

    # ------------------------------------------------------------------ model construction
    def load_model(self) -> nn.Module:
        """Load the model to unlearn. Override to build a model some other way."""
        return self.builder.load()

    def import_model_classes(self) -> None:
        """Import the classes ``configure_model`` builds before ``zero.Init`` patches class
        creation (:func:`~lightning_unlearn.models.import_causal_lm_class`). A method that
        overrides :meth:`load_model` with another architecture imports its class here too."""
        self.builder.import_classes(reference=self.needs_reference)

    def configure_model(self) -> None:
        """Build the trained model and the frozen ones (:meth:`.ModelBuilder.build`)."""
        if self.model is not None:
            return
        model, reference = self.builder.build(
            self.load_model,
            needs_reference=self.needs_reference,
            datamodule=getattr(self._trainer, "datamodule", None),
            owner=type(self).__name__,
        )
        if reference is not None:
            self.reference = reference
        self.model = model
        self.configure_extra_models()

    def configure_extra_models(self) -> None:
        """Hook for methods that need more frozen models (e.g. a random-initialised one)."""

    def frozen_modules(self) -> list[nn.Module]:
        """Models that never train (reference, random targets): kept in eval mode always."""
        return [m for m in (self.reference, getattr(self, "random_model", None)) if m is not None]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def on_fit_start(self) -> None:
        self.train()

    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (without peft wrapping)."""
        self._require_model()
        return self.model.get_base_model() if self.lora is not None else self.model

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError(
                "the model is not built yet: call module.configure_model() (Trainer does this)"
            )

    # ------------------------------------------------------------------ forward passes
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the trained model on a batch."""
        self._require_model()
        logits = self.model(**model_inputs(batch), use_cache=False).logits
        self.forget_guard.offer(batch, logits)
        return logits

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the frozen original model: the one place every method gets them from. With
        LoRA it is the trained model with its adapters disabled, run in eval mode (no dropout, like
        the separate reference); the model's train/eval modes are restored afterwards."""
        return self._reference_output(batch).logits

    @torch.no_grad()
    def _reference_output(self, batch: dict[str, Tensor], **kwargs: Any):
        """The frozen original's forward output (see :meth:`reference_logits`)."""
        self._require_model()
        inputs = model_inputs(batch)
        if self.lora is not None and self.reference is None:
            with self.model.disable_adapter(), eval_mode(self.model):
                return self.model(**inputs, use_cache=False, **kwargs)
        if self.reference is None:
            raise RuntimeError(
                f"{type(self).__name__} asked for reference logits but has no reference model; "
                "set forget_needs_reference = True on the class"
            )
        return self.reference(**inputs, use_cache=False, **kwargs)

    # ------------------------------------------------------------------ the method's terms
    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The forget term on one forget batch. Every method defines it."""
        raise NotImplementedError(f"{type(self).__name__} must implement forget_loss")

    def retain_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The retain term on one retain batch (called when :attr:`uses_retain`): the NLL of the
        retain text, or its KL divergence from the frozen original (``retain_term``): from the two
        models' last hidden states where the architecture allows it, holding neither model's
        logits (:mod:`~lightning_unlearn.methods.output_heads`), else from the two logits."""
        if self.retain_term == "kl":
            heads = self._output_layers()
            if heads is not None:
                return kl_from_hidden_states(self.model, self._reference_output, batch, heads)
        reference = self.reference_logits(batch) if self.retain_term == "kl" else None
        return retain_term_loss(self.retain_term, self(batch), batch["labels"], reference)

    def _output_layers(self) -> tuple[nn.Linear, nn.Linear] | None:
        """The two models' output layers when the KL can be made from hidden states, or None."""
        return linear_heads(self.hf_model, self.reference)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        forget = batch_part(batch, "forget", type(self).__name__)
        size = forget["input_ids"].size(0)
        if self.forget_mask is not None:  # forget documents at their target leave the term
            forget = self.forget_mask.apply(forget)
        if forget is None and not self.uses_retain:
            return None  # nothing of this batch is left to train on: Lightning skips the step
        if forget is None:
            loss = forget_term = torch.zeros((), device=self.device)
        else:
            with self.forget_guard.watching(forget):
                forget_term = self.forget_loss(forget)
                self.forget_guard.check(self.model, forget, self.global_step)
            loss = self.forget_weight * forget_term
        self.log("train/forget_loss", forget_term.detach(), prog_bar=True, batch_size=size)
        if self.uses_retain:
            retain = batch_part(batch, "retain", type(self).__name__)
            if forget is not None and self.backward_mode() == "sequential":
                # back-propagate the forget term now and free its graph: the retain sequence's
                # activations are then the only ones alive; the gradients add up to the joint ones
                check_finite(loss, self.global_step)
                loss = self.backward_steps.backward_now(self, loss, batch_idx)
            retain_term = self.retain_loss(retain)
            loss = loss + self.retain_weight * retain_term
            self.log("train/retain_loss", retain_term.detach(), prog_bar=True, batch_size=size)
        check_finite(loss, self.global_step)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        return loss

    def backward_mode(self) -> str:
        """``"joint"`` or ``"sequential"`` (:meth:`.SequentialBackward.mode`)."""
        return self.backward_steps.mode(self._trainer)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Zero the gradients, unless this step did before its early forget backward."""
        if not self.backward_steps.skip_zero_grad(epoch, batch_idx):
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_after_backward(self) -> None:
        check_gradients(self.named_parameters(), self.global_step)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        total = self.trainer.estimated_stepping_batches
        schedule = warmup_schedule(optimizer, total, self.warmup_ratio, self.scheduler_name)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ------------------------------------------------------------------ checkpoints & export
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is not None:
            for key in [k for k in state if k.startswith(("reference.", "random_model."))]:
                del state[key]

    def export(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Save the unlearned model (and its tokenizer) as a Hugging Face checkpoint, written
        whole or not at all (:meth:`.ModelBuilder.export`: LoRA merged unless
        ``lora.save_adapter_only``). In a distributed run call it on every rank."""
        self._require_model()
        return self.builder.export(self.model, path, overwrite=overwrite)


# re-exported for subclasses and the modules that import them from here
__all__ = ["UnlearningModule", "DivergenceError", "RetainTerm", "RETAIN_TERMS"]
