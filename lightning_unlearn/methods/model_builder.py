"""Building a method's models, and writing the unlearned one out.

:class:`ModelBuilder` holds the ``UnlearningModule`` arguments that say where the trained model,
its reference and its tokenizer come from and how the model is trained (LoRA, gradient
checkpointing). :meth:`ModelBuilder.build` is what ``UnlearningModule.configure_model`` does: the
trained model (a check of the data module's tokenizer and ``max_length`` against it), the frozen
reference when the method needs one, LoRA adapters; :meth:`ModelBuilder.export` writes the
unlearned model as a Hugging Face checkpoint.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..io import atomic_directory
from ..models import (
    LoraSettings,
    apply_lora,
    check_model_inputs,
    check_reference_config,
    freeze,
    import_causal_lm_class,
    load_causal_lm,
    load_config,
    load_tokenizer,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelBuilder:
    """Where a method's models and tokenizer come from, and how the trained one is set up.

    Args:
        model_name_or_path: the model to unlearn (a local directory, a ``.gguf`` file, a hub id).
        gguf_file: a GGUF file inside ``model_name_or_path`` when it is a folder.
        tokenizer: where the tokenizer comes from; ``None``: the model's own.
        trust_remote_code: allow model code from the hub to run.
        dtype: weight dtype to load; ``None`` keeps the checkpoint's.
        reference: a model to use as the frozen reference instead of a copy of the model.
        lora: adapters to put on the trained model, or ``None`` to train every weight.
        gradient_checkpointing: recompute activations in the backward pass.
    """

    model_name_or_path: str
    gguf_file: str | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    dtype: str | None = None
    reference: str | None = None
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False

    def load(self) -> nn.Module:
        """The model to unlearn, as its checkpoint has it."""
        return load_causal_lm(
            self.model_name_or_path,
            gguf_file=self.gguf_file,
            trust_remote_code=self.trust_remote_code,
            dtype=self.dtype,
        )

    def import_classes(self, *, reference: bool) -> None:
        """Import the model's class (and the reference's, when ``reference`` and one is given)
        before a sharding strategy's ``zero.Init`` patches class creation (see
        :func:`~lightning_unlearn.models.import_causal_lm_class`)."""
        import_causal_lm_class(
            self.model_name_or_path,
            gguf_file=self.gguf_file,
            trust_remote_code=self.trust_remote_code,
        )
        if reference and self.reference is not None:
            import_causal_lm_class(str(self.reference), trust_remote_code=self.trust_remote_code)

    def load_reference(self, model: nn.Module) -> nn.Module:
        """The user-supplied reference model, after checking it has ``model``'s architecture."""
        name = str(self.reference)
        check_reference_config(
            model.config,
            load_config(name, trust_remote_code=self.trust_remote_code),
            model=self.model_name_or_path,
            reference_name=name,
        )
        return load_causal_lm(name, trust_remote_code=self.trust_remote_code, dtype=self.dtype)

    def load_tokenizer(self):
        """The tokenizer: ``tokenizer`` if given, else the model's own (from its GGUF file too)."""
        source = self.tokenizer or self.model_name_or_path
        return load_tokenizer(
            source,
            gguf_file=self.gguf_file if source == self.model_name_or_path else None,
            trust_remote_code=self.trust_remote_code,
        )

    def check_inputs(self, model: nn.Module, datamodule: Any) -> None:
        """Check the data module's tokenizer and ``max_length`` against ``model`` (when there is
        a data module that has them)."""
        if datamodule is None or not hasattr(datamodule, "max_length"):
            return
        check_model_inputs(
            model.config,
            model=self.model_name_or_path,
            tokenizer=datamodule.tokenizer,
            tokenizer_name=getattr(datamodule, "tokenizer_name_or_path", None),
            max_length=datamodule.max_length,
        )

    def build(
        self,
        load_model: Callable[[], nn.Module],
        *,
        needs_reference: bool,
        datamodule: Any = None,
        owner: str = "the method",
    ) -> tuple[nn.Module, nn.Module | None]:
        """The trained model and its frozen reference (``None`` when not needed, or when LoRA's
        disabled adapters serve as the reference).

        Args:
            load_model: loads the model to unlearn (the module's overridable ``load_model``);
                called again for the reference copy, so that it is built (and sharded) alike.
            needs_reference: the method compares against the frozen original.
            datamodule: the trainer's data module, whose tokenizer and ``max_length`` are checked.
            owner: the method's name, for the log.
        """
        model = load_model()
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        self.check_inputs(model, datamodule)
        reference = None
        if needs_reference and self.reference is not None:
            reference = freeze(self.load_reference(model))
        elif needs_reference and self.lora is None:
            # a frozen copy of the original weights, built the same way so it is sharded alike
            reference = freeze(load_model())
        elif self.reference is not None:
            log.warning("%s uses no reference model; ignoring reference_model_name_or_path", owner)
        if self.lora is not None:
            model = apply_lora(model, self.lora)
        return model, reference

    def export(self, model: nn.Module, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Save ``model`` and the tokenizer as a Hugging Face checkpoint at ``path``.

        Weights are written as safetensors into a temporary directory that replaces ``path`` only
        once everything is written. With LoRA the adapters are merged into a plain checkpoint
        unless ``lora.save_adapter_only`` is set. Under DeepSpeed ZeRO-3 the shards are gathered
        (a collective: call it on every rank) and rank 0 alone writes.
        """
        from ..strategies import gathered_parameters

        with gathered_parameters(model) as write:
            if not write:
                return Path(path)
            to_save = model
            if self.lora is not None and not self.lora.save_adapter_only:
                to_save = copy.deepcopy(model).merge_and_unload()
            with atomic_directory(path, overwrite=overwrite) as tmp:
                to_save.save_pretrained(tmp, safe_serialization=True)
                tokenizer = self._tokenizer_for_export()
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
        return Path(path)

    def _tokenizer_for_export(self):
        try:
            return self.load_tokenizer()
        except (OSError, ValueError) as err:
            log.warning("no tokenizer exported with the model (%s)", err)
            return None
