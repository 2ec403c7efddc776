"""Shared fixtures: a tiny random-initialised Llama model and tokenizer, built offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

FORGET_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os, sys, json\nprint(os.getcwd())\n",
]
RETAIN_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Perplexity measures how surprised a language model is by text.",
    "Machine unlearning removes the influence of training documents.",
    "The capital of France is Paris.",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from lightning_unlearn.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def make_batch(tokenizer, texts, max_length=48):
    """Right-padded batch with labels -100 on padding (the data module's contract)."""
    ids = [tokenizer(t)["input_ids"][:max_length] for t in texts]
    width = max(len(x) for x in ids)
    pad = tokenizer.eos_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        attention[i, : len(x)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


@pytest.fixture
def forget_batch(tiny_tokenizer):
    return make_batch(tiny_tokenizer, FORGET_TEXTS)


@pytest.fixture
def retain_batch(tiny_tokenizer):
    return make_batch(tiny_tokenizer, RETAIN_TEXTS)


@pytest.fixture(scope="session")
def trained_tiny_model_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    """The tiny model after memorising FORGET_TEXTS and RETAIN_TEXTS (about 2 s of training).

    Unlearning a random model tells little: it knows nothing to lose. This one has learned both
    sets, so damage to the retain set shows.
    """
    import shutil

    from transformers import AutoModelForCausalLM

    from lightning_unlearn.losses import token_nll

    out = tmp_path_factory.mktemp("tiny-llama-trained")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batches = [make_batch(tiny_tokenizer, FORGET_TEXTS), make_batch(tiny_tokenizer, RETAIN_TEXTS)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            token_nll(logits, b["labels"]).backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, out / name)
    return out
