"""Question answering with a causal LM, the two things the QA benchmarks (TOFU, MUSE KnowMem)
ask of a model: the probability of a given answer, and the model's own answer.

The prompt is built as the data module builds it for training (:func:`~lightning_unlearn.data.
encode_qa`: the tokenizer's chat template when it has one), so a model unlearned on QA records is
evaluated on the same layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data.sources import DataSource, QARecord, read_qa
from ..data.tokenize import PadCollator, encode_qa
from ..losses import sequence_nll
from .generation import greedy_generate

__all__ = ["qa_source", "load_qa", "answer_logprob_means", "generate_answers"]


def qa_source(source: str | os.PathLike | DataSource | dict) -> DataSource:
    """A QA :class:`DataSource` (a path, a dict of fields or a source; ``question_column``
    defaults to ``"question"``)."""
    source = DataSource.coerce(source)
    if source.question_column is None:
        source.question_column = "question"
    return source


def load_qa(source: str | os.PathLike | DataSource | dict, *, role: str) -> list[QARecord]:
    """The records of a QA source (TOFU's and MUSE's schemas: ``question``, ``answer``; the other
    columns in ``extras``)."""
    return read_qa(qa_source(source), role=role)


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def answer_logprob_means(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int = 512,
    batch_size: int = 8,
) -> Tensor:
    """``log P(a | q) / |a|`` (mean log-probability per answer token) of each ``(q, a)`` pair,
    teacher-forced, the prompt's tokens left out (``[pairs]``)."""
    if not pairs:
        return torch.zeros(0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate, device = PadCollator(pad), _device(model)
    encoded = []
    for question, answer in pairs:
        ids, prompt_len = encode_qa(tokenizer, question, answer, max_length=max_length)
        encoded.append({"input_ids": ids, "prompt_len": prompt_len})
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = torch.zeros(len(encoded), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([encoded[i] for i in rows])
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
            means = -sequence_nll(logits.float(), batch["labels"].to(device))
            for j, i in enumerate(rows):
                out[i] = float(means[j])
    finally:
        model.train(was_training)
    return out


def generate_answers(
    model: nn.Module,
    tokenizer,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 200,
    max_length: int = 512,
    batch_size: int = 8,
) -> list[str]:
    """The model's greedy answer to each question (stopping at EOS), decoded."""
    prompts = [
        ids[:prompt_len]
        for ids, prompt_len in (
            encode_qa(tokenizer, q, "x", max_length=max_length) for q in questions
        )
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generated = greedy_generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        batch_size=batch_size,
    )
    return [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
