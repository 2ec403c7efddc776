"""An offline demo corpus, built deterministically from the running Python's own files.

No network is needed: the text comes from the standard library installed with Python.

* ``forget``, ``approximate``, ``retain``: Python code, one top-level function or class per
  document, taken from disjoint sets of standard-library modules (modules sorted by path, then
  shuffled with ``seed``). Same domain, different documents.
* ``forget`` and ``approximate`` are drawn from one pool and split *matched on difficulty*: the
  pool is sorted by a difficulty score (the pre-trained model's mean token loss when the caller
  passes ``difficulty``, else the zlib compression ratio), cut into consecutive blocks, and each
  block is dealt at random between the two splits. Without this, 16 random documents per split
  differ by chance by 20-30% in perplexity already on the untouched model, membership inference
  "detects" that difference (AUC 0.63 before any training), and the approximate-retrain target
  sits far from where the forget documents would naturally be, so unlearning must overshoot.
* ``general``: English prose, the help topics of ``pydoc_data.topics`` (what ``help("topics")``
  shows).

What the demo can and cannot show, honestly: the demo model (SmolLM2-135M) was pre-trained on a
large web/code mix that may include some of these standard-library files, but a 135M model has
memorised little of them, so its loss on ``forget`` and ``approximate`` starts about equal and
there would be nothing to unlearn. The demo therefore first *continues pre-training* on
``pretrain`` (= forget + retain, never ``approximate``), which makes the forget set truly seen and
``approximate`` truly unseen. Continued pre-training on ``pretrain_without_forget`` (= retain
only) with the same settings gives an exact-retrain reference model for free -- something that is
impossible for the real pre-training corpus. Results on this corpus show the method works
mechanically; they are not a claim about forgetting real pre-training data.

The output is identical (byte for byte, hence the same SHA-256 in ``manifest.json``) for the same
parameters on the same Python version: files are read in sorted order, only ``random.Random(seed)``
decides, and the manifest holds no timestamps. Another Python version has other standard-library
sources and gives another (equally valid) corpus; the manifest records the version.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import sys
import sysconfig
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..io import atomic_write_json, atomic_write_text
from .task import DemoSettings, settings_key

__all__ = ["build_demo_corpus", "DEMO_SPLITS", "demo_corpus", "document_losses"]

DEMO_SPLITS = ("forget", "approximate", "retain", "general", "pretrain", "pretrain_without_forget")
_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
}


def _stdlib_modules() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        rel = path.relative_to(root)
        if _SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        files.append((rel.as_posix(), path))
    files.sort()
    if not files:
        raise FileNotFoundError(
            f"no standard-library .py files under '{root}'; this Python ships without sources "
            "(install the python3-stdlib / full Python package) or pass your own corpus"
        )
    return files


def _definitions(path: Path, *, min_chars: int, max_chars: int) -> list[tuple[str, str]]:
    """Top-level functions and classes whose source length is in ``[min_chars, max_chars]``."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        text = "".join(lines[start : node.end_lineno])
        if min_chars <= len(text) <= max_chars:
            out.append((node.name, text))
    return out


def _code_documents(
    modules, count: int, *, min_chars: int, max_chars: int, split: str
) -> list[dict]:
    """Round-robin over ``modules``: each module's first definition, then second, ...

    Modules are parsed only when needed, so a small corpus reads few files.
    """
    parsed: dict[int, list[tuple[str, str]]] = {}
    docs: list[dict] = []
    depth = 0
    while len(docs) < count:
        progressed = False
        for i, (rel, path) in enumerate(modules):
            if len(docs) == count:
                break
            if i not in parsed:
                parsed[i] = _definitions(path, min_chars=min_chars, max_chars=max_chars)
            if depth < len(parsed[i]):
                name, text = parsed[i][depth]
                docs.append({"text": text, "source": f"{rel}:{name}"})
                progressed = True
        if not progressed:
            break
        depth += 1
    if len(docs) < count:
        raise ValueError(
            f"the demo corpus's {split} split needs {count} code documents of {min_chars}-"
            f"{max_chars} characters but this Python's standard library gives only {len(docs)}; "
            "ask for fewer documents or widen the length range"
        )
    return docs


def _general_documents(
    count: int, *, min_chars: int, max_chars: int, rng: random.Random
) -> list[dict]:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise ImportError(
            "the demo corpus's general split needs the standard-library module pydoc_data "
            "(missing from this Python build)"
        ) from err
    candidates = []
    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) < min_chars:
            continue
        if len(text) > max_chars:  # cut at the last paragraph break that fits
            cut = text.rfind("\n\n", 0, max_chars)
            text = text[: cut if cut >= min_chars else max_chars].rstrip()
        candidates.append({"text": text + "\n", "source": f"pydoc_data.topics:{name}"})
    if len(candidates) < count:
        raise ValueError(
            f"the demo corpus's general split needs {count} documents but pydoc_data.topics "
            f"gives only {len(candidates)} of {min_chars}+ characters; ask for fewer"
        )
    rng.shuffle(candidates)
    return candidates[:count]


def zlib_ratio(texts: Sequence[str]) -> list[float]:
    """Compressed / raw size of each text: a model-free difficulty score (lower = more
    predictable)."""
    return [len(zlib.compress(t.encode("utf-8"))) / max(1, len(t.encode("utf-8"))) for t in texts]


def _deal_matched(
    docs: list[dict], scores: Sequence[float], counts: tuple[int, int], rng: random.Random
) -> tuple[list[dict], list[dict]]:
    """Split ``docs`` into two lists of ``counts`` documents with matched score distributions:
    sorted by score, cut into blocks of ``sum(counts) / gcd`` documents, each block dealt at random
    in the ratio of ``counts``."""
    if len(scores) != len(docs):
        raise ValueError(f"difficulty returned {len(scores)} scores for {len(docs)} documents")
    g = math.gcd(*counts)
    per_block = (counts[0] // g, counts[1] // g)
    order = sorted(range(len(docs)), key=lambda i: (scores[i], i))
    first: list[dict] = []
    second: list[dict] = []
    size = sum(per_block)
    for start in range(0, len(order), size):
        block = order[start : start + size]
        rng.shuffle(block)
        first += [docs[i] for i in block[: per_block[0]]]
        second += [docs[i] for i in block[per_block[0] :]]
    # in score order the first documents would be the easiest: a partial read (``limit``) of a
    # split must be a fair sample of it
    rng.shuffle(first)
    rng.shuffle(second)
    return first, second


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def build_demo_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    forget_documents: int = 32,
    approximate_documents: int = 32,
    retain_documents: int = 64,
    general_documents: int = 32,
    min_chars: int = 800,
    max_chars: int = 2000,
    difficulty: Callable[[list[str]], Sequence[float]] | None = None,
    difficulty_name: str | None = None,
) -> Path:
    """Write the demo corpus as ``<split>.jsonl`` files plus ``manifest.json`` into ``out_dir``.

    Splits: ``forget``, ``approximate``, ``retain`` (code), ``general`` (prose), and the
    continued-pre-training corpora ``pretrain`` (forget + retain, shuffled) and
    ``pretrain_without_forget`` (retain only: the exact-retrain reference). Each line is
    ``{"text": ..., "source": "module/path.py:name"}``.

    Args:
        out_dir: folder to write into (created if needed; existing demo files are replaced).
        seed: decides which modules go to which split and which topics are used.
        forget_documents: documents in the forget split.
        approximate_documents: documents in the approximate (unseen) split.
        retain_documents: documents in the retain split.
        general_documents: documents in the general split.
        min_chars: shortest document, in characters (800 characters of code is roughly 250
            SmolLM2 tokens).
        max_chars: longest document, in characters (2000 is roughly 600 tokens).
        difficulty: scores a list of texts (lower = easier), used to match ``forget`` and
            ``approximate`` (see the module docstring); default: :func:`zlib_ratio`.
        difficulty_name: how ``difficulty`` scores, for the manifest (e.g. the model's name).

    Returns:
        ``out_dir`` as a Path.
    """
    for name, value in (
        ("forget_documents", forget_documents),
        ("approximate_documents", approximate_documents),
        ("retain_documents", retain_documents),
        ("general_documents", general_documents),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars <= max_chars, got {min_chars} and {max_chars}")
    out = Path(out_dir)
    rng = random.Random(seed)
    modules = _stdlib_modules()
    rng.shuffle(modules)
    # disjoint module sets, sized in proportion to the documents each pool needs
    pooled = forget_documents + approximate_documents
    cut = len(modules) * pooled // (pooled + retain_documents)
    pool = _code_documents(
        modules[:cut], pooled, min_chars=min_chars, max_chars=max_chars, split="forget+approximate"
    )
    splits: dict[str, list[dict]] = {}
    splits["retain"] = _code_documents(
        modules[cut:], retain_documents, min_chars=min_chars, max_chars=max_chars, split="retain"
    )
    scores = (difficulty or zlib_ratio)([d["text"] for d in pool])
    splits["forget"], splits["approximate"] = _deal_matched(
        pool, list(scores), (forget_documents, approximate_documents), rng
    )
    splits["general"] = _general_documents(
        general_documents, min_chars=min_chars, max_chars=max_chars, rng=rng
    )
    pretrain = splits["forget"] + splits["retain"]
    rng.shuffle(pretrain)
    splits["pretrain"] = pretrain
    splits["pretrain_without_forget"] = list(splits["retain"])

    files = {}
    for split in DEMO_SPLITS:
        text = _jsonl(splits[split])
        atomic_write_text(out / f"{split}.jsonl", text)
        files[split] = {
            "file": f"{split}.jsonl",
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "documents": len(splits[split]),
            "characters": sum(len(d["text"]) for d in splits[split]),
        }
    manifest = {
        "name": "lightning-unlearn demo corpus",
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        "parameters": {
            "seed": seed,
            "forget_documents": forget_documents,
            "approximate_documents": approximate_documents,
            "retain_documents": retain_documents,
            "general_documents": general_documents,
            "min_chars": min_chars,
            "max_chars": max_chars,
            "matched_on": difficulty_name or ("zlib ratio" if difficulty is None else "custom"),
        },
        "built_from": (
            "forget/approximate/retain: one top-level function or class per document from "
            "disjoint sets of this Python's standard-library modules (sorted by path, shuffled "
            "with random.Random(seed), split in proportion to the document counts); forget and "
            "approximate dealt from one pool in blocks matched on difficulty; general: "
            "pydoc_data.topics help texts; pretrain = forget + retain (shuffled), "
            "pretrain_without_forget = retain"
        ),
        "files": files,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return out


def document_losses(model_dir: Path, *, max_length: int, cache: Path | None = None):
    """A ``difficulty`` scorer for :func:`~lightning_unlearn.demo.corpus.build_demo_corpus`: the mean
    token loss of each text (its first ``max_length`` tokens) under the model in ``model_dir``.
    Scores are cached in ``cache`` by model and texts, so a second run does not load the model."""

    def score(texts: list[str]) -> list[float]:
        key = settings_key(str(model_dir), max_length, texts)
        path = None if cache is None else cache / f"difficulty-{key}.json"
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        from transformers import AutoModelForCausalLM

        from ..data import PadCollator
        from ..losses import sequence_nll
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        collate = PadCollator(pad)  # labels are -100 on padding, so pad's value never counts
        encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), 8):  # batches of similar lengths
                rows = order[start : start + 8]
                batch = collate([{"input_ids": encoded[i]} for i in rows])
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                per_doc = sequence_nll(logits, batch["labels"])
                for j, i in enumerate(rows):
                    out[i] = float(per_doc[j])
        if path is not None:
            from ..io import atomic_write_json

            atomic_write_json(path, out)
        return out

    return score


def demo_corpus(model_dir: Path, s: DemoSettings) -> Path:
    """Build the demo corpus under ``cache_dir``, forget / approximate matched on the loss of the
    untouched model in ``model_dir`` (the benchmarks call this too, so they see the same corpus)."""
    cache = Path(s.cache_dir)
    return build_demo_corpus(
        cache / "demo-corpus",
        seed=s.seed,
        forget_documents=s.forget_documents,
        approximate_documents=s.approximate_documents,
        retain_documents=s.retain_documents,
        general_documents=s.general_documents,
        min_chars=s.min_chars,
        max_chars=s.max_chars,
        difficulty=document_losses(model_dir, max_length=s.max_length, cache=cache / "scores"),
        difficulty_name=f"mean token loss of {Path(model_dir).name} (untouched)",
    )
