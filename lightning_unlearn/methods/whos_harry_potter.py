"""Who's Harry Potter (WHP): fine-tune on generic predictions.

Eldan & Russinovich, "Who's Harry Potter? Approximate Unlearning in LLMs", 2023
(arXiv:2310.02238). Three steps:

1. A *reinforced* model: the original trained further on the forget set, so that it predicts the
   forget set's idiosyncratic tokens even more strongly (built at the start of ``fit`` from the
   forget batches, ``reinforce_steps`` AdamW steps at ``reinforce_lr``; or loaded from
   ``reinforced_model``).
2. *Generic predictions*: with ``v_b`` the original's logits and ``v_r`` the reinforced model's,
   ``v_generic = v_b - alpha * ReLU(v_r - v_b)`` (eq. 1; the paper uses alpha = 5). Optionally,
   *anchored terms* (a JSON dictionary ``{"Hogwarts": "Mystic Academy", ...}``) are first
   replaced by generic counterparts in the forget text, and both logits are computed on the
   translated text.
3. Fine-tune the model on the *original* forget text towards the generic predictions. The paper
   uses the generic prediction's argmax as a hard label (``target="hard"``); ``target="soft"``
   uses the full distribution ``softmax(v_generic)`` instead.

Anchored-term alignment (our approximation of the paper's token alignment): replacement is done
on token ids, matching each term's token sequence with and without a leading space. The
prediction made at an original position is taken from the translated position with the same
left context: before a term that is the prediction of the replacement's first token (which is
what the paper wants the model to learn), after a term it is the prediction after the
replacement's last token. Predictions made *inside* a term (its 2nd..last token) have no
counterpart and are not trained on.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..losses import (
    IGNORE_INDEX,
    argmax_labels,
    soft_target_cross_entropy,
    token_nll,
    whp_generic_logits,
)
from ..models import freeze, load_causal_lm, model_inputs
from ..validation import check_number
from .base import UnlearningModule

log = logging.getLogger(__name__)


def load_anchored_terms(path: str | os.PathLike) -> dict[str, str]:
    """Read an anchored-term dictionary: a JSON object mapping each term to its replacement."""
    try:
        with open(path, encoding="utf-8") as fh:
            terms = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"anchored_terms file '{path}' does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"anchored_terms file '{path}' is not valid JSON: {err}") from None
    if not isinstance(terms, dict) or not terms:
        raise ValueError(
            f"anchored_terms file '{path}' must hold a non-empty JSON object "
            '{"term": "generic replacement", ...}'
        )
    bad = [k for k, v in terms.items() if not (isinstance(v, str) and k.strip() and v.strip())]
    if bad:
        raise ValueError(
            f"anchored_terms file '{path}': terms {bad[:5]} need a non-empty string replacement"
        )
    return dict(terms)


def translate_tokens(
    input_ids: Tensor, attention_mask: Tensor, pairs: list[tuple[list[int], list[int]]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Replace term token sequences by their replacements, row by row.

    Args:
        input_ids: ``[batch, seq]`` token ids.
        attention_mask: ``[batch, seq]``, 1 on real tokens.
        pairs: ``(term_ids, replacement_ids)``; the first match in this order wins at a position.

    Returns:
        ``(translated_ids, translated_mask, index)``: right-padded translated rows and, for every
        original position, the translated position with the same left context (the last token of
        the replacement for a term's last token; ``-1`` inside terms and on padding).
    """
    rows: list[list[int]] = []
    index = torch.full_like(input_ids, -1)
    for b in range(input_ids.size(0)):
        positions = attention_mask[b].nonzero().flatten().tolist()
        seq = input_ids[b, positions].tolist()
        out: list[int] = []
        k = 0
        while k < len(seq):
            for term, repl in pairs:
                if seq[k : k + len(term)] == term:
                    out.extend(repl)
                    index[b, positions[k + len(term) - 1]] = len(out) - 1
                    k += len(term)
                    break
            else:
                out.append(seq[k])
                index[b, positions[k]] = len(out) - 1
                k += 1
        rows.append(out)
    width = max(1, max(len(r) for r in rows))
    ids = torch.zeros((len(rows), width), dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=ids.dtype)
        mask[b, : len(row)] = 1
    return ids, mask, index


class _ForgetPart:
    """Re-iterable view of the forget batches of a training loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if isinstance(self.loader, dict):
            if "forget" not in self.loader:
                raise ValueError("the training loaders have no 'forget' loader to reinforce on")
            yield from self.loader["forget"]
            return
        for item in self.loader:
            yield item["forget"] if isinstance(item, dict) and "forget" in item else item


class WhosHarryPotter(UnlearningModule):
    """Fine-tune the forget text towards generic predictions (original minus reinforced boost).

    Args:
        alpha: weight of the reinforced model's boost in ``v_b - alpha * ReLU(v_r - v_b)``
            (paper: 5).
        target: ``"hard"``: train on the generic argmax token (paper); ``"soft"``: cross-entropy
            to ``softmax(v_generic)``.
        reinforced_model: path or hub id of an already reinforced model; when ``None`` it is
            built at the start of ``fit``.
        reinforce_steps: AdamW steps on forget batches to build the reinforced model (the
            batches cycle if the forget set has fewer).
        reinforce_lr: learning rate of those steps.
        anchored_terms: path to a JSON object ``{"term": "generic replacement"}`` applied to the
            forget text before the generic predictions are computed; ``None`` for none.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_needs_reference = True

    def __init__(
        self,
        model_name_or_path: str,
        *,
        alpha: float = 5.0,
        target: Literal["hard", "soft"] = "hard",
        reinforced_model: str | None = None,
        reinforce_steps: int = 100,
        reinforce_lr: float = 1e-5,
        anchored_terms: str | None = None,
        **kwargs,
    ) -> None:
        check_number("alpha", alpha, low=0)
        if target not in ("hard", "soft"):
            raise ValueError(f"target must be 'hard' or 'soft', got {target!r}")
        if reinforced_model is None and reinforce_steps < 1:
            raise ValueError(
                f"reinforce_steps must be >= 1 to build the reinforced model, got "
                f"{reinforce_steps}; or pass reinforced_model=<path>"
            )
        check_number("reinforce_lr", reinforce_lr, low=0, strict=True)
        super().__init__(model_name_or_path, **kwargs)
        self.alpha = float(alpha)
        self.target = target
        self.reinforced_model_path = reinforced_model
        self.reinforce_steps = int(reinforce_steps)
        self.reinforce_lr = float(reinforce_lr)
        self.anchored_terms = load_anchored_terms(anchored_terms) if anchored_terms else None
        self.reinforced: nn.Module | None = None
        self._anchor_pairs: list[tuple[list[int], list[int]]] | None = None

    # ------------------------------------------------------------------ models
    def configure_extra_models(self) -> None:
        if self.reinforced_model_path is not None and self.reinforced is None:
            self.reinforced = freeze(
                load_causal_lm(
                    self.reinforced_model_path,
                    trust_remote_code=self.trust_remote_code,
                    dtype=self.dtype_name,
                )
            )

    def frozen_modules(self) -> list[nn.Module]:
        extra = [self.reinforced] if self.reinforced is not None else []
        return super().frozen_modules() + extra

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if state is not None:
            for key in [k for k in state if k.startswith("reinforced.")]:
                del state[key]

    def on_train_start(self) -> None:
        if self.reinforced is None:
            self.reinforce(_ForgetPart(self.trainer.train_dataloader))

    def reinforce(self, batches: Iterable[dict[str, Tensor]]) -> nn.Module:
        """Build the reinforced model: a copy of the original trained on ``batches``.

        ``batches`` (forget batches) are iterated again until ``reinforce_steps`` steps are done.
        """
        self._require_model()
        from ..strategies import is_zero3_partitioned

        if any(is_zero3_partitioned(m) for m in (self.model, self.reference) if m is not None):
            # a copy of a partitioned model holds only this rank's shards and no engine to train it
            raise RuntimeError(
                "WhosHarryPotter cannot build its reinforced model inside a DeepSpeed ZeRO-3 run: "
                "fine-tune the original model on the forget set first (e.g. lightning-unlearn fit "
                "with lightning_unlearn.pretraining.ContinuedPretraining on the forget data) and pass "
                "reinforced_model=<that folder>; it is then loaded and sharded like the reference"
            )
        model = copy.deepcopy(self.reference) if self.reference is not None else self.load_model()
        model.to(self.device).train()
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.reinforce_lr, weight_decay=0.0)
        steps, loss = 0, None
        with torch.enable_grad():
            while steps < self.reinforce_steps:
                before = steps
                for batch in batches:
                    inputs = {k: v.to(self.device) for k, v in model_inputs(batch).items()}
                    logits = model(**inputs, use_cache=False).logits
                    loss = token_nll(logits, batch["labels"].to(self.device))
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    steps += 1
                    if steps >= self.reinforce_steps:
                        break
                if steps == before:
                    raise ValueError("no forget batches to build the reinforced model from")
        log.info("reinforced model: %d steps, last forget NLL %.4f", steps, loss.item())
        self.reinforced = freeze(model)
        return self.reinforced

    # ------------------------------------------------------------------ anchored terms
    def anchor_pairs(self) -> list[tuple[list[int], list[int]]]:
        """Token-id ``(term, replacement)`` pairs, with and without a leading space, longest first."""
        if self._anchor_pairs is None:
            tok = self.builder.load_tokenizer()
            pairs: dict[tuple[int, ...], list[int]] = {}
            for term, repl in (self.anchored_terms or {}).items():
                for prefix in ("", " "):
                    term_ids = tok.encode(prefix + term, add_special_tokens=False)
                    repl_ids = tok.encode(prefix + repl, add_special_tokens=False)
                    if term_ids and repl_ids:
                        pairs.setdefault(tuple(term_ids), repl_ids)
            ordered = sorted(pairs.items(), key=lambda kv: -len(kv[0]))
            self._anchor_pairs = [(list(t), r) for t, r in ordered]
        return self._anchor_pairs

    def translate(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """The forget batch with anchored terms replaced, and the position map (see module doc)."""
        if "position_ids" in batch:
            raise ValueError(
                "anchored_terms need unpacked forget batches (this batch carries position_ids); "
                "turn packing off for the forget set"
            )
        ids, mask, index = translate_tokens(
            batch["input_ids"], batch["attention_mask"], self.anchor_pairs()
        )
        return {"input_ids": ids, "attention_mask": mask}, index

    # ------------------------------------------------------------------ targets and loss
    @torch.no_grad()
    def reinforced_logits(self, batch: dict[str, Tensor]) -> Tensor:
        if self.reinforced is None:
            raise RuntimeError(
                "WhosHarryPotter has no reinforced model yet: pass reinforced_model=<path>, train "
                "with Trainer.fit (it reinforces at the start) or call module.reinforce(batches)"
            )
        inputs = model_inputs(batch)
        return self.reinforced(**inputs, use_cache=False).logits

    @torch.no_grad()
    def forget_targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(generic_logits, labels)`` aligned with the batch: logits like the model's, labels
        like ``batch['labels']`` with -100 where a prediction has no generic counterpart."""
        labels = batch["labels"]
        source, index = (batch, None) if not self.anchored_terms else self.translate(batch)
        generic = whp_generic_logits(
            self.reference_logits(source), self.reinforced_logits(source), alpha=self.alpha
        )
        if index is not None:
            gather = index.clamp_min(0).unsqueeze(-1).expand(-1, -1, generic.size(-1))
            generic = generic.gather(1, gather)
            labels = labels.clone()
            labels[:, 1:] = labels[:, 1:].masked_fill(index[:, :-1] < 0, IGNORE_INDEX)
        return generic, labels

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        generic, labels = self.forget_targets(batch)
        if self.target == "hard":
            return token_nll(self(batch), argmax_labels(generic, labels))
        return soft_target_cross_entropy(self(batch), labels, generic)
