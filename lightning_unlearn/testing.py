"""Tiny random-initialised models and tokenizers, built offline in seconds.

Used by the test suite, the quick-start notebook and the benchmarks' smoke tests. Nothing here
downloads anything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

_DEFAULT_TEXT = """
The quick brown fox jumps over the lazy dog. Machine unlearning removes the influence of
training documents from a model. def add(a, b):\n    return a + b\n
class Stack:\n    def push(self, item):\n        self.items.append(item)\n
Perplexity measures how surprised a language model is by text. import os, sys, json
for i in range(10):\n    print(i * i)\n  The capital of France is Paris.
"""


def build_tiny_tokenizer(
    out_dir: str | os.PathLike, *, vocab_size: int = 384, text: str | None = None
):
    """Train a small byte-level BPE tokenizer and save it as a transformers fast tokenizer.

    It has ``<|endoftext|>`` as BOS/EOS and *no* pad token, like many causal LM tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = (text or _DEFAULT_TEXT).split("\n") * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    fast.model_max_length = 512
    fast.save_pretrained(out_dir)
    return fast


def tiny_llama_config(vocab_size: int, **overrides):
    """A Llama-style config small enough for unit tests (about 70k parameters)."""
    from transformers import LlamaConfig

    defaults = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    defaults.update(overrides)
    return LlamaConfig(**defaults)


def build_tiny_model(
    out_dir: str | os.PathLike, *, seed: int = 0, vocab_size: int = 384, **config
) -> Path:
    """Save a tiny random-initialised Llama model plus tokenizer into ``out_dir``."""
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out, vocab_size=vocab_size)
    cfg = tiny_llama_config(len(tokenizer), **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out, safe_serialization=True)
    return out


class RepeatedBatches(torch.utils.data.IterableDataset):
    """The same ready-made batch ``steps`` times (wrap in ``DataLoader(..., batch_size=None)``)."""

    def __init__(self, batch, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.batch

    def __len__(self) -> int:
        return self.steps


def cpu_trainer(**kwargs):
    """A quiet one-process CPU ``Trainer`` (no logger, checkpoints, bars or sanity check);
    ``kwargs`` override (the demo's and the tests' trainer)."""
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def build_method(cls, path, **kwargs):
    """An unlearning method on ``path`` with a constant learning rate, its model already built."""
    kwargs.setdefault("warmup_ratio", 0.0)
    kwargs.setdefault("scheduler", "constant")
    module = cls(str(path), **kwargs)
    module.configure_model()
    return module


def fit_on_batches(module, forget, retain=None, steps: int = 1, **trainer_kwargs):
    """Train ``module`` for ``steps`` optimizer steps on one fixed forget (and retain) batch."""
    batch = {"forget": forget} if retain is None else {"forget": forget, "retain": retain}
    trainer = cpu_trainer(**{"max_steps": steps, **trainer_kwargs})
    loader = torch.utils.data.DataLoader(RepeatedBatches(batch, steps), batch_size=None)
    trainer.fit(module, loader)
    return trainer


@torch.no_grad()
def forget_nll(module, batch) -> float:
    """Mean token NLL of ``batch`` under ``module`` (eval mode)."""
    from .losses import token_nll

    module.eval()
    return token_nll(module(batch), batch["labels"]).item()


class FaultInjection(Callback):
    """Inject a fault at one training step (for reliability tests).

    Args:
        at_step: the global step (optimizer steps done) at whose batch the fault happens.
        kind: ``"exception"`` raises ``RuntimeError``; ``"nan_loss"`` turns the trained weights to
            NaN before the forward pass, so the loss is NaN; ``"nan_grad"`` puts a NaN into one
            gradient after the backward pass; ``"hang"`` writes ``marker`` and sleeps, for a test
            to kill the process from outside.
        marker: file written when the fault fires (default: none).
    """

    def __init__(
        self,
        at_step: int,
        kind: Literal["exception", "nan_loss", "nan_grad", "hang"] = "exception",
        marker: str | None = None,
    ) -> None:
        if kind not in ("exception", "nan_loss", "nan_grad", "hang"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.at_step = int(at_step)
        self.kind = kind
        self.marker = marker

    def _fire(self) -> None:
        if self.marker:
            Path(self.marker).write_text(self.kind)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != self.at_step:
            return
        if self.kind == "exception":
            self._fire()
            raise RuntimeError(f"injected fault at step {self.at_step}")
        if self.kind == "nan_loss":
            self._fire()
            with torch.no_grad():
                for p in pl_module.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
        if self.kind == "hang":
            self._fire()
            while True:  # wait to be killed
                time.sleep(1.0)

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.kind == "nan_grad" and trainer.global_step == self.at_step:
            self._fire()
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.view(-1)[0] = float("nan")
                    break
