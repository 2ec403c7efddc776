"""Preference-style unlearning: DPO with the forget text as the rejected answer.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", NeurIPS 2023 (arXiv:2305.18290), used for unlearning as in Maini et al., "TOFU: A Task of
Fictitious Unlearning for LLMs", 2024 (arXiv:2401.06121, "preference optimization" with "I don't
know" answers) and Zhang et al. 2024 (arXiv:2404.05868, the DPO baseline of NPO).

Forget data here are plain text chunks, not question/answer pairs: the first ``prompt_tokens``
tokens of each chunk are the prompt, the rest of the chunk is the *rejected* answer, and the
*chosen* answer is an alternative: a refusal (``"refusal"``, text ``alternative_text``) or a
continuation sampled from a randomly initialised model of the same architecture
(``"random_model"``). The loss is

    -E log sigmoid(beta * ((log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))))

with log-probabilities summed over answer tokens only and ``pi_ref`` the frozen original. TOFU and
open-unlearning use beta = 0.1 with an NLL retain term (``retain_term="nll"``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..losses import IGNORE_INDEX, dpo_loss, sequence_logprob
from ..models import freeze, random_like
from ..validation import check_number
from .base import UnlearningModule


class PreferenceUnlearning(UnlearningModule):
    """DPO: prefer an alternative answer over the forget text's continuation.

    Args:
        beta: DPO inverse temperature (TOFU / open-unlearning: 0.1).
        prompt_tokens: how many leading tokens of each forget chunk form the prompt (a chunk
            shorter than ``prompt_tokens + 1`` tokens keeps at least one answer token).
        alternative: ``"refusal"`` (the chosen answer is ``alternative_text``) or
            ``"random_model"`` (the chosen answer is sampled from a randomly initialised model,
            as many tokens as the rejected answer, at most ``max_alternative_tokens``).
        alternative_text: the refusal used as chosen answer.
        max_alternative_tokens: cap on sampled alternative length.
        random_seed: seed of the random model and of its sampling.
        retain_term: ``"none"`` (the base's default), ``"nll"`` or ``"kl"`` on retain data, weighted
            by ``retain_weight``; see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_needs_reference = True

    def __init__(
        self,
        model_name_or_path: str,
        *,
        beta: float = 0.1,
        prompt_tokens: int = 32,
        alternative: Literal["refusal", "random_model"] = "refusal",
        alternative_text: str = "I'm sorry, I don't know that.",
        max_alternative_tokens: int = 64,
        random_seed: int = 1234,
        **kwargs,
    ) -> None:
        check_number("beta", beta, low=0, strict=True)
        check_number("prompt_tokens", prompt_tokens, low=1)
        if alternative not in ("refusal", "random_model"):
            raise ValueError(
                f"alternative must be 'refusal' or 'random_model', got {alternative!r}"
            )
        if alternative == "refusal" and not alternative_text.strip():
            raise ValueError("alternative_text is empty; give the refusal the model should prefer")
        check_number("max_alternative_tokens", max_alternative_tokens, low=1)
        super().__init__(model_name_or_path, **kwargs)
        self.beta = float(beta)
        self.prompt_tokens = int(prompt_tokens)
        self.alternative = alternative
        self.alternative_text = alternative_text
        self.max_alternative_tokens = int(max_alternative_tokens)
        self.random_seed = int(random_seed)
        self.random_model = None
        self._refusal_ids: list[int] | None = None

    def configure_extra_models(self) -> None:
        if self.alternative == "random_model" and self.random_model is None:
            self.random_model = freeze(random_like(self.hf_model, seed=self.random_seed))

    # ------------------------------------------------------------------ the pairs
    def refusal_ids(self) -> list[int]:
        """``alternative_text`` tokenised with the model's tokenizer, followed by EOS if any."""
        if self._refusal_ids is None:
            tok = self.builder.load_tokenizer()
            ids = tok.encode(" " + self.alternative_text.strip(), add_special_tokens=False)
            if tok.eos_token_id is not None:
                ids.append(tok.eos_token_id)
            self._refusal_ids = ids
        return self._refusal_ids

    @torch.no_grad()
    def _sample_alternative(self, prompt: Tensor, length: int) -> list[int]:
        with torch.random.fork_rng(devices=[prompt.device] if prompt.is_cuda else []):
            torch.manual_seed(self.random_seed + int(self.global_step))
            out = self.random_model.generate(
                input_ids=prompt.unsqueeze(0),
                attention_mask=torch.ones_like(prompt).unsqueeze(0),
                do_sample=True,
                top_k=0,
                max_new_tokens=min(length, self.max_alternative_tokens),
                min_new_tokens=1,
                pad_token_id=int(prompt[0]),
            )
        return out[0, prompt.numel() :].tolist()

    def preference_pair(
        self, batch: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(chosen, rejected)`` batches built from a forget batch (see the module docstring).

        Both are right-padded with labels -100 on the prompt and padding, so only answer tokens
        count in the log-probabilities.
        """
        if "position_ids" in batch:
            raise ValueError(
                "PreferenceUnlearning needs unpacked forget chunks (this batch carries "
                "position_ids): each row must start with its own prompt; turn packing off"
            )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rejected_labels = batch["labels"].clone()
        rows: list[list[int]] = []
        prompt_lengths: list[int] = []
        for b in range(ids.size(0)):
            positions = mask[b].nonzero().flatten()
            real = ids[b, positions]
            n_prompt = max(1, min(self.prompt_tokens, real.numel() - 1))
            rejected_labels[b, positions[:n_prompt]] = IGNORE_INDEX
            prompt = real[:n_prompt]
            if self.alternative == "refusal":
                answer = self.refusal_ids()
            else:
                answer = self._sample_alternative(prompt, real.numel() - n_prompt)
            rows.append(prompt.tolist() + answer)
            prompt_lengths.append(n_prompt)
        width = max(len(r) for r in rows)
        chosen_ids = torch.zeros((len(rows), width), dtype=ids.dtype, device=ids.device)
        chosen_mask = torch.zeros_like(chosen_ids)
        for b, row in enumerate(rows):
            chosen_ids[b, : len(row)] = torch.tensor(row, dtype=ids.dtype)
            chosen_mask[b, : len(row)] = 1
        chosen_labels = chosen_ids.masked_fill(chosen_mask == 0, IGNORE_INDEX)
        for b, n in enumerate(prompt_lengths):
            chosen_labels[b, :n] = IGNORE_INDEX
        chosen = {"input_ids": chosen_ids, "attention_mask": chosen_mask, "labels": chosen_labels}
        rejected = {"input_ids": ids, "attention_mask": mask, "labels": rejected_labels}
        return chosen, rejected

    # ------------------------------------------------------------------ the terms
    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        chosen, rejected = self.preference_pair(batch)
        return dpo_loss(
            sequence_logprob(self(chosen), chosen["labels"]),
            sequence_logprob(self(rejected), rejected["labels"]),
            sequence_logprob(self.reference_logits(chosen), chosen["labels"]),
            sequence_logprob(self.reference_logits(rejected), rejected["labels"]),
            beta=self.beta,
        )
