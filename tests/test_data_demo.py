"""The offline demo corpus: deterministic, disjoint splits, honest pretraining corpora."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from lightning_unlearn.data import DataSource, read_documents
from lightning_unlearn.demo.corpus import DEMO_SPLITS, build_demo_corpus

SIZES = dict(forget_documents=6, approximate_documents=6, retain_documents=12, general_documents=5)


def load(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_demo_corpus_is_deterministic_and_split_cleanly(tmp_path):
    first = build_demo_corpus(tmp_path / "a", seed=3, **SIZES)
    second = build_demo_corpus(tmp_path / "b", seed=3, **SIZES)
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest == json.loads((second / "manifest.json").read_text())
    assert manifest["python_version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    for split in DEMO_SPLITS:
        data = (first / f"{split}.jsonl").read_bytes()
        assert manifest["files"][split]["sha256"] == hashlib.sha256(data).hexdigest()
        assert data == (second / f"{split}.jsonl").read_bytes()
    other = json.loads(
        (build_demo_corpus(tmp_path / "c", seed=4, **SIZES) / "manifest.json").read_text()
    )
    assert other["files"]["forget"]["sha256"] != manifest["files"]["forget"]["sha256"]

    docs = {split: load(first, split) for split in DEMO_SPLITS}
    for split, key in (
        ("forget", "forget_documents"),
        ("approximate", "approximate_documents"),
        ("retain", "retain_documents"),
        ("general", "general_documents"),
    ):
        assert len(docs[split]) == SIZES[key] == manifest["files"][split]["documents"]
        assert all(800 <= len(d["text"]) <= 2001 for d in docs[split]), split
    # code splits come from disjoint sets of modules
    modules = {
        s: {d["source"].split(":")[0] for d in docs[s]} for s in ("forget", "approximate", "retain")
    }
    assert not modules["forget"] & modules["approximate"]
    assert not modules["forget"] & modules["retain"]
    assert not modules["approximate"] & modules["retain"]
    assert all(d["source"].startswith("pydoc_data.topics:") for d in docs["general"])
    # the continued-pretraining corpora: with and without the forget set, never approximate
    texts = {s: sorted(d["text"] for d in docs[s]) for s in DEMO_SPLITS}
    assert texts["pretrain"] == sorted(texts["forget"] + texts["retain"])
    assert texts["pretrain_without_forget"] == texts["retain"]
    assert not set(texts["approximate"]) & set(texts["pretrain"])
    # readable by the data layer as-is
    assert len(read_documents(DataSource(path=str(first / "forget.jsonl")))) == 6


def test_demo_corpus_rejects_impossible_sizes(tmp_path):
    with pytest.raises(ValueError, match="forget_documents must be >= 1"):
        build_demo_corpus(tmp_path, forget_documents=0)
    with pytest.raises(ValueError, match="general split needs 10000 documents"):
        build_demo_corpus(
            tmp_path,
            forget_documents=1,
            approximate_documents=1,
            retain_documents=1,
            general_documents=10_000,
        )


def test_forget_and_approximate_are_matched_on_difficulty(tmp_path):
    """Sorted by the caller's score, each consecutive pair puts one document in each split, so the
    two splits' score distributions interleave rank by rank; the manifest records the score."""
    calls = []

    def length(texts):
        calls.append(len(texts))
        return [float(len(t)) for t in texts]

    sizes = dict(SIZES, forget_documents=5, approximate_documents=5)
    folder = build_demo_corpus(
        tmp_path, seed=1, difficulty=length, difficulty_name="length", **sizes
    )
    assert calls == [10]  # scored once, over the pooled forget + approximate candidates
    forget = sorted(len(d["text"]) for d in load(folder, "forget"))
    approx = sorted(len(d["text"]) for d in load(folder, "approximate"))
    for i in range(4):
        assert max(forget[i], approx[i]) <= min(forget[i + 1], approx[i + 1])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"]["matched_on"] == "length"

    # unequal sizes deal blocks in the sizes' ratio (2:1 here)
    uneven = dict(SIZES, forget_documents=6, approximate_documents=3)
    folder = build_demo_corpus(tmp_path / "u", seed=1, difficulty=length, **uneven)
    assert len(load(folder, "forget")) == 6 and len(load(folder, "approximate")) == 3

    with pytest.raises(ValueError, match="difficulty returned 1 scores for 10 documents"):
        build_demo_corpus(tmp_path / "bad", difficulty=lambda texts: [0.0], **sizes)
