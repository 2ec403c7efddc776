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
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from ..evaluation.metrics import EVAL_SPLITS, UnlearningEvaluator, score_batch
from ..io import atomic_directory
from ..losses import (
    IGNORE_INDEX,
    RETAIN_TERMS,
    check_retain_term,
    linear_kl_to_reference,
    retain_term_loss,
    token_nll,
)
from ..models import (
    LoraSettings,
    apply_lora,
    check_model_inputs,
    check_reference_config,
    eval_mode,
    freeze,
    import_causal_lm_class,
    load_causal_lm,
    load_config,
    load_tokenizer,
    model_inputs,
)

#: the retain terms the base class computes (``"none"``: no retain data is used)
RetainTerm = Literal["none", "nll", "kl"]

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient, or the forget loss ran past its bound."""


class UnlearningModule(LightningModule):
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
    #: each forget document's target and band (set by ``UnlearningWorkflow(targets="documents")``;
    #: read by methods whose forget term is per document)
    document_targets: Any = None
    #: the per-document mask (``UnlearningWorkflow(document_mask=True)``): forget documents at
    #: their target leave the forget term
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
        backward: Literal["joint", "sequential"] | None = None,
    ) -> None:
        super().__init__()
        if backward not in (None, "joint", "sequential"):
            raise ValueError(f"backward must be 'joint', 'sequential' or None, got {backward!r}")
        _check_number("learning_rate", learning_rate, low=0.0, strict=True)
        _check_number("forget_weight", forget_weight, low=0.0)
        _check_number("retain_weight", retain_weight, low=0.0)
        _check_number("weight_decay", weight_decay, low=0.0)
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if max_forget_nll is not None:
            _check_number("max_forget_nll", max_forget_nll, low=0.0, strict=True)
        if scheduler not in ("cosine", "constant"):
            raise ValueError(f"scheduler must be 'cosine' or 'constant', got {scheduler!r}")
        check_retain_term(retain_term)
        if isinstance(lora, dict):
            lora = LoraSettings(**lora)
        self.model_name_or_path = str(model_name_or_path)
        self.gguf_file = gguf_file
        self.tokenizer_name_or_path = tokenizer
        self.trust_remote_code = trust_remote_code
        self.dtype_name = dtype
        self.lora = lora
        self.gradient_checkpointing = gradient_checkpointing
        self.forget_weight = float(forget_weight)
        self.retain_term = retain_term
        self.retain_weight = float(retain_weight)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.warmup_ratio = float(warmup_ratio)
        self.scheduler_name = scheduler
        self.max_forget_nll = max_forget_nll
        self.reference_model_name_or_path = reference_model_name_or_path
        self.backward_order = backward  # not `self.backward`: that is the LightningModule hook
        # an unset tokenizer is the model's own: left out of the hyper-parameters, so a logger that
        # merges them with the data module's (whose tokenizer is the model path) sees no conflict
        self.save_hyperparameters(ignore=["tokenizer"] if tokenizer is None else None)
        # built in configure_model() so ZeRO-3 / FSDP can shard at creation
        self.model: nn.Module | None = None
        self.reference: nn.Module | None = None
        self.evaluator = UnlearningEvaluator(EVAL_SPLITS)
        self._forget_capture: dict[str, Any] | None = None
        # the reference model is rebuilt from the original weights: keep it out of checkpoints
        self.strict_loading = False

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
        return load_causal_lm(
            self.model_name_or_path,
            gguf_file=self.gguf_file,
            trust_remote_code=self.trust_remote_code,
            dtype=self.dtype_name,
        )

    def import_model_classes(self) -> None:
        """Import the classes ``configure_model`` builds (the model and the reference), before a
        sharding strategy's ``zero.Init`` patches class creation (see
        :func:`~lightning_unlearn.models.import_causal_lm_class`). A method that overrides
        :meth:`load_model` with another architecture imports its class here too."""
        import_causal_lm_class(
            self.model_name_or_path,
            gguf_file=self.gguf_file,
            trust_remote_code=self.trust_remote_code,
        )
        if self.needs_reference and self.reference_model_name_or_path is not None:
            import_causal_lm_class(
                str(self.reference_model_name_or_path), trust_remote_code=self.trust_remote_code
            )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        model = self.load_model()
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        self._check_inputs(model)
        if self.needs_reference and self.reference_model_name_or_path is not None:
            self.reference = freeze(self._load_reference(model))
        elif self.needs_reference and self.lora is None:
            # a frozen copy of the original weights, built the same way so it is sharded alike
            self.reference = freeze(self.load_model())
        elif self.reference_model_name_or_path is not None:
            log.warning(
                "%s uses no reference model; ignoring reference_model_name_or_path",
                type(self).__name__,
            )
        if self.lora is not None:
            model = apply_lora(model, self.lora)
        self.model = model
        self.configure_extra_models()

    def _load_reference(self, model: nn.Module) -> nn.Module:
        """Load the user-supplied reference model after checking its architecture."""
        name = str(self.reference_model_name_or_path)
        check_reference_config(
            model.config,
            load_config(name, trust_remote_code=self.trust_remote_code),
            model=self.model_name_or_path,
            reference_name=name,
        )
        return load_causal_lm(name, trust_remote_code=self.trust_remote_code, dtype=self.dtype_name)

    def _check_inputs(self, model: nn.Module) -> None:
        """Check the data module's tokenizer and ``max_length`` against the model (when training
        under a Trainer with a data module that has them)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "max_length"):
            return
        check_model_inputs(
            model.config,
            model=self.model_name_or_path,
            tokenizer=datamodule.tokenizer,
            tokenizer_name=getattr(datamodule, "tokenizer_name_or_path", None),
            max_length=datamodule.max_length,
        )

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
        inputs = model_inputs(batch)
        logits = self.model(**inputs, use_cache=False).logits
        capture = self._forget_capture
        if capture is not None and "logits" not in capture and batch is capture["batch"]:
            capture["logits"] = logits.detach()
        return logits

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the frozen original model: the one place every method gets them from.

        With LoRA the original is the trained model with its adapters disabled, run in eval mode
        (no dropout: the same logits at every call, like the separate reference, which is always
        in eval mode); the model's train/eval modes are restored afterwards.
        """
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
        retain text, or its KL divergence from the frozen original (``retain_term``).

        The KL is computed from the two models' last hidden states and output layers, the logits
        made chunk by chunk (:func:`~lightning_unlearn.losses.linear_kl_to_reference`): neither
        model's ``[batch, seq, vocab]`` logits are held. Where that is not possible (an output
        layer that is not a plain linear layer, logits post-processed after it, ZeRO-3 sharding)
        it falls back to the two logits tensors."""
        if self.retain_term == "kl":
            heads = self._output_layers()
            if heads is not None:
                inputs = model_inputs(batch)
                kwargs = {"use_cache": False, "output_hidden_states": True, "logits_to_keep": 1}
                hidden = self.model(**inputs, **kwargs).hidden_states[-1]
                reference = self._reference_output(batch, output_hidden_states=True,
                                                   logits_to_keep=1).hidden_states[-1]  # fmt: skip
                head, reference_head = heads
                return linear_kl_to_reference(
                    hidden, reference, head.weight, reference_head.weight, batch["labels"],
                    bias=head.bias, reference_bias=reference_head.bias,
                )  # fmt: skip
        reference = self.reference_logits(batch) if self.retain_term == "kl" else None
        return retain_term_loss(self.retain_term, self(batch), batch["labels"], reference)

    def _output_layers(self) -> tuple[nn.Linear, nn.Linear] | None:
        """The trained and the reference model's output layers, when logits are exactly
        ``hidden @ W.T + b`` of the last hidden state; ``None`` otherwise."""
        models = [self.hf_model]
        if self.reference is not None:
            models.append(self.reference)
        heads = []
        for model in models:
            head = model.get_output_embeddings()
            config = getattr(model, "config", None)
            post = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")
            if (
                type(head) is not nn.Linear
                or any(getattr(config, name, None) for name in post)
                or hasattr(head.weight, "ds_id")  # ZeRO-3: the weight is a shard
                or "logits_to_keep" not in inspect.signature(model.forward).parameters
            ):
                return None
            heads.append(head)
        return heads[0], heads[-1]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        forget = batch.get("forget") if isinstance(batch, dict) else None
        if forget is None:
            raise ValueError(
                "training batch has no 'forget' part; use UnlearningDataModule or yield "
                "{'forget': batch, 'retain': batch}"
            )
        _check_targets(forget, "forget")
        if self.forget_mask is not None:
            forget = self.forget_mask.apply(forget)
            if forget is None:  # every document of this batch is at its target
                return self._retain_only(batch, batch_idx)
        self._forget_capture = {"batch": forget} if self.max_forget_nll is not None else None
        try:
            forget_term = self.forget_loss(forget)
            if self.max_forget_nll is not None:
                self._check_forget_nll(forget)
        finally:
            self._forget_capture = None
        loss = self.forget_weight * forget_term
        size = forget["input_ids"].size(0)
        self.log("train/forget_loss", forget_term.detach(), prog_bar=True, batch_size=size)
        if self.uses_retain:
            retain = batch.get("retain")
            if retain is None:
                raise ValueError(
                    f"{type(self).__name__} needs retain data but the batch has none; "
                    "give the data module a 'retain' source"
                )
            _check_targets(retain, "retain")
            if self.backward_mode() == "sequential":
                # back-propagate the forget term now and free its graph: the retain sequence's
                # activations are then the only ones alive; the gradients add up to the joint ones
                _check_finite(loss, self.global_step)
                self._backward_now(loss, batch_idx)
                loss = loss.detach()
            retain_term = self.retain_loss(retain)
            loss = loss + self.retain_weight * retain_term
            self.log("train/retain_loss", retain_term.detach(), prog_bar=True, batch_size=size)
        _check_finite(loss, self.global_step)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        return loss

    def _retain_only(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        """The step of a forget batch the per-document mask emptied: the retain term alone
        (``None``, Lightning skips the step, for a method without one)."""
        self.log("train/forget_loss", 0.0, prog_bar=True, batch_size=1)
        if not self.uses_retain or batch.get("retain") is None:
            return None
        retain = batch["retain"]
        _check_targets(retain, "retain")
        retain_term = self.retain_loss(retain)
        loss = self.retain_weight * retain_term
        size = retain["input_ids"].size(0)
        _check_finite(loss, self.global_step)
        self.log("train/retain_loss", retain_term.detach(), prog_bar=True, batch_size=size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        return loss

    def backward_mode(self) -> str:
        """``"joint"`` or ``"sequential"``: ``backward`` as configured, else sequential except
        under DeepSpeed (the engine reduces at every backward: twice per step) and FSDP (its hooks
        expect one backward per forward), where it is joint (``docs/cluster.md``)."""
        if self.backward_order is not None:
            return self.backward_order
        strategy = type(getattr(self._trainer, "strategy", None)).__name__
        return "joint" if ("DeepSpeed" in strategy or "FSDP" in strategy) else "sequential"

    def _backward_now(self, loss: Tensor, batch_idx: int) -> None:
        """Back-propagate ``loss`` inside ``training_step`` exactly as Lightning back-propagates
        the step's returned loss (divided by the accumulation, through the strategy and the
        precision plugin: loss scaling, backward hooks, the DeepSpeed engine).

        Under DDP the step runs inside the wrapper's forward, before the reducer is prepared for
        this step's backward, so this backward accumulates locally (like ``no_sync``) and the
        step's second backward reduces the sum once. Under DeepSpeed ZeRO the optimizer is told a
        new micro-batch began (what the engine's next forward would do), so the second backward
        adds to the gradient partitions instead of replacing them.

        Lightning zeroes the gradients after ``training_step`` returns, before its backward: on
        the first batch of an accumulation cycle they are zeroed here instead, before this
        backward, and :meth:`optimizer_zero_grad` skips that step's second zeroing.
        """
        trainer = self.trainer
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if batch_idx % trainer.accumulate_grad_batches == 0 and optimizer is not None:
            self.optimizer_zero_grad(trainer.current_epoch, batch_idx, optimizer)
            self._zeroed_early = (trainer.current_epoch, batch_idx)
        trainer.strategy.backward(loss / trainer.accumulate_grad_batches, optimizer)
        zero = getattr(getattr(trainer.strategy, "model", None), "optimizer", None)
        if "DeepSpeed" in type(trainer.strategy).__name__ and hasattr(
            zero, "clear_backward_seen_flag"
        ):
            zero.clear_backward_seen_flag()

    def _check_forget_nll(self, forget: dict[str, Tensor]) -> None:
        """Stop when the forget NLL passes ``max_forget_nll`` (gradient ascent running away)."""
        logits = self._forget_capture.get("logits") if self._forget_capture else None
        if logits is None:  # the method did not call self(forget): one more forward pass
            with torch.no_grad():
                logits = self.model(**model_inputs(forget), use_cache=False).logits
        value = float(token_nll(logits.float(), forget["labels"]))
        if not value <= self.max_forget_nll:
            raise DivergenceError(
                f"forget NLL {value:.4f} at step {self.global_step} is above max_forget_nll="
                f"{self.max_forget_nll}: gradient ascent is running away. Lower the learning_rate, "
                "stop earlier (ApproximateRetrainStopping) or raise max_forget_nll; the last "
                "checkpoint was written before this step"
            )

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Zero the gradients, unless this step already did before its early forget backward
        (``backward="sequential"``): those gradients are the step's and must stay."""
        if getattr(self, "_zeroed_early", None) == (epoch, batch_idx):
            self._zeroed_early = None
            return
        super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_after_backward(self) -> None:
        named = [(n, p.grad) for n, p in self.named_parameters() if p.grad is not None]
        if not named:
            return
        # one fused norm per gradient and a single host sync, instead of one sync per tensor
        norms = torch._foreach_norm([g for _, g in named])
        finite = torch.isfinite(torch.stack(norms))
        if bool(finite.all()):
            return
        name = named[int((~finite).nonzero()[0])][0]
        raise DivergenceError(
            f"non-finite gradient in '{name}' at step {self.global_step}; lower the "
            "learning_rate or resume from the last good checkpoint"
        )

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(math.ceil(self.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(warmup, total, self.scheduler_name)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ evaluation
    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        split = batch.get("split")
        if isinstance(split, (list, tuple)):
            split = split[0]
        if split is None:
            raise ValueError("evaluation batches must carry their split name under 'split'")
        self._require_model()
        score_batch(self.model, batch, split, self.evaluator)

    def on_validation_epoch_end(self) -> None:
        results = self.evaluator.compute()
        for key, value in results.items():
            self.log(f"val/{key}", value, sync_dist=False, rank_zero_only=False)
        self.evaluator.reset()

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # ------------------------------------------------------------------ checkpoints & export
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is not None:
            for key in [k for k in state if k.startswith(("reference.", "random_model."))]:
                del state[key]

    def export(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Save the unlearned model (and its tokenizer) as a Hugging Face checkpoint.

        Weights are written as safetensors into a temporary directory that replaces ``path`` only
        once everything is written. With LoRA the adapters are merged into a plain checkpoint
        unless ``lora.save_adapter_only`` is set.

        In a distributed run call it on every rank: under DeepSpeed ZeRO-3 the shards are gathered
        (a collective) and rank 0 alone writes the full checkpoint.
        """
        self._require_model()
        from ..strategies import gathered_parameters

        with gathered_parameters(self.model) as write:
            if not write:
                return Path(path)
            to_save = self.model
            if self.lora is not None and not self.lora.save_adapter_only:
                import copy

                to_save = copy.deepcopy(self.model).merge_and_unload()
            with atomic_directory(path, overwrite=overwrite) as tmp:
                to_save.save_pretrained(tmp, safe_serialization=True)
                tokenizer = self._tokenizer_for_export()
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
        return Path(path)

    def _tokenizer_for_export(self):
        source = self.tokenizer_name_or_path or self.model_name_or_path
        try:
            return load_tokenizer(
                source,
                gguf_file=self.gguf_file if source == self.model_name_or_path else None,
                trust_remote_code=self.trust_remote_code,
            )
        except (OSError, ValueError) as err:
            log.warning("no tokenizer exported with the model (%s)", err)
            return None


def _check_number(name: str, value: float, *, low: float, strict: bool = False) -> None:
    bad = (
        not isinstance(value, (int, float))
        or math.isnan(value)
        or value < low
        or (strict and value == low)
    )
    if bad:
        op = ">" if strict else ">="
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name} must be {op} {low:g}, got {shown}")


def _check_finite(loss: Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"non-finite training loss ({loss.item()}) at step {step}; lower the "
            "learning_rate or resume from the last good checkpoint"
        )


def _check_targets(batch: dict[str, Tensor], part: str) -> None:
    labels = batch.get("labels")
    if labels is None:
        raise ValueError(f"{part} batch has no 'labels'")
    if not (labels[:, 1:] != IGNORE_INDEX).any():
        raise ValueError(
            f"{part} batch has no real target tokens (every label is -100 after the shift); "
            "check that its documents are not empty and that padding is not the only content"
        )


def _lr_lambda(warmup: int, total: int, kind: str):
    """The learning-rate factor of optimizer step ``step`` (0-based): a linear warm-up over
    ``warmup`` steps, then constant or a half cosine to 0 at ``total``.

    Kept instead of transformers' ``get_cosine_schedule_with_warmup`` /
    ``get_constant_schedule_with_warmup``, which agree without warm-up (the demo's
    ``warmup_ratio: 0``) but differ with one (the method presets' 0.03): theirs takes its first step at
    factor ``0/warmup`` (a step that changes nothing, one of the few an unlearning run takes)
    where this one starts at ``1/warmup`` and reaches 1 on the last warm-up step; and past
    ``total`` (a resumed run given more steps) their cosine rises again where this one stays at 0.
    """

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# re-exported helpers for subclasses
__all__ = ["UnlearningModule", "DivergenceError", "RetainTerm", "RETAIN_TERMS"]
