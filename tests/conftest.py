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


# ------------------------------------------------------------------ data fixtures (data layer)
TINY_CORPUS = {
    "forget": FORGET_TEXTS
    + [
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "class Queue:\n    def __init__(self):\n        self.items = []\n\n    def put(self, x):\n"
        "        self.items.insert(0, x)\n",
        "with open('data.json') as fh:\n    data = json.load(fh)\nprint(len(data))\n",
        "def square(x):\n    return x * x\n\nprint([square(i) for i in range(10)])\n",
    ],
    "retain": RETAIN_TEXTS
    + [
        "Language models predict the next token from the tokens before it.",
        "A forget set holds the documents a model must no longer reproduce.",
    ],
    "approximate": [
        "def mul(a, b):\n    return a * b\n",
        "class Heap:\n    def pop(self):\n        return self.items.pop()\n",
        "while True:\n    line = input()\n    if not line:\n        break\n",
        "import sys\nprint(sys.argv[1:])\n",
    ],
    "general": [
        "Rivers carry water from the mountains to the sea.",
        "The library opens at nine in the morning and closes at six.",
        "Bread is made from flour, water, salt and yeast.",
        "A week has seven days and a year has twelve months.",
    ],
}


def write_jsonl(path, texts, column="text"):
    """Write one JSON object per line with the text under ``column``."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps({column: text}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory):
    """A folder with ``forget.jsonl`` (8 docs), ``retain.jsonl`` (6), ``approximate.jsonl`` (4)
    and ``general.jsonl`` (4), each line ``{"text": ...}``. Use it as::

        UnlearningDataModule(str(tiny_model_dir), forget=str(tiny_corpus_dir / "forget.jsonl"),
                             retain=..., approximate=..., general=..., cache_dir=str(tmp_path))
    """
    out = tmp_path_factory.mktemp("tiny-corpus")
    for split, texts in TINY_CORPUS.items():
        write_jsonl(out / f"{split}.jsonl", texts)
    return out


@pytest.fixture
def tiny_datamodule_kwargs(tiny_model_dir, tiny_corpus_dir, tmp_path):
    """Keyword arguments for a complete ``UnlearningDataModule`` on the tiny corpus, with a
    private cache folder: ``UnlearningDataModule(**tiny_datamodule_kwargs, batch_size=2)``."""
    return {
        "tokenizer": str(tiny_model_dir),
        "forget": str(tiny_corpus_dir / "forget.jsonl"),
        "retain": str(tiny_corpus_dir / "retain.jsonl"),
        "approximate": str(tiny_corpus_dir / "approximate.jsonl"),
        "general": str(tiny_corpus_dir / "general.jsonl"),
        "max_length": 64,
        "cache_dir": str(tmp_path / "data-cache"),
    }


# ------------------------------------------------------------------ the method table's runs
@pytest.fixture(scope="session")
def unlearned(trained_tiny_model_dir, tiny_tokenizer):
    """``unlearned(name)``: method ``name`` trained with its row of the method table
    (``test_methods_contract.ROWS``) on the memorised tiny model, once per session; the
    contract's tests and a method's own checks read the same run (do not train it further)."""
    from test_methods_contract import unlearn

    runs = {}

    def get(name):
        if name not in runs:
            forget = make_batch(tiny_tokenizer, FORGET_TEXTS)
            retain = make_batch(tiny_tokenizer, RETAIN_TEXTS)
            runs[name] = unlearn(name, trained_tiny_model_dir, forget, retain)
        return runs[name]

    return get
