"""The data layer: sources, chunking / packing, the cache, loaders, sharding and errors."""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_CORPUS, write_jsonl

from lightning_unlearn.data import (
    DataSource,
    PadCollator,
    SourceError,
    UnlearningDataModule,
    chunk_documents,
    pack_documents,
    read_documents,
)
from lightning_unlearn.data import loaders as loaders_mod
from lightning_unlearn.data import splits as splits_mod

FIXTURE_HUB = Path(__file__).parent / "fixtures" / "data" / "unlearn_dataset"


def rows(batch):
    """The real (unpadded) token rows of a batch, as tuples."""
    out = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        out.append(tuple(ids[mask.bool()].tolist()))
    return out


def all_rows(dataset):
    return [tuple(x) for x in dataset["input_ids"]]


# ------------------------------------------------------------------ training loader
def test_combined_loader_one_forget_pass_and_retain_cycles(tiny_datamodule_kwargs):
    dm = UnlearningDataModule(
        **{**tiny_datamodule_kwargs, "max_length": 12}, batch_size=3, retain_per_forget=2
    )
    dm.setup("fit")
    forget, retain = all_rows(dm.train_dataset("forget")), all_rows(dm.train_dataset("retain"))
    assert len(forget) > 8  # long documents became several chunks
    loader = dm.train_dataloader()
    for epoch in range(2):
        seen_forget, seen_retain, steps = [], [], 0
        for batch, _, _ in loader:
            assert set(batch) == {"forget", "retain"}
            assert batch["retain"]["input_ids"].shape[0] == 6  # batch_size * retain_per_forget
            assert batch["forget"]["input_ids"].shape[0] <= 3
            seen_forget += rows(batch["forget"])
            seen_retain += rows(batch["retain"])
            steps += 1
        assert steps == math.ceil(len(forget) / 3) == len(loader)
        # exactly one pass over the forget set
        assert Counter(seen_forget) == Counter(forget), epoch
        # retain cycles: more rows than the set holds, every chunk used, none skipped in a pass
        assert len(seen_retain) == 6 * steps > len(retain)
        assert set(seen_retain) == set(retain)
        first_pass = seen_retain[: len(retain)]
        assert Counter(first_pass) == Counter(retain) or epoch > 0


def test_retain_batch_size_sets_the_retain_batch_whatever_the_forget_batch(
    tiny_datamodule_kwargs,
):
    kw = {**tiny_datamodule_kwargs, "max_length": 12}
    dm = UnlearningDataModule(**kw, batch_size=5, retain_batch_size=2)
    dm.setup("fit")
    forget = all_rows(dm.train_dataset("forget"))
    sizes = [(len(rows(b["forget"])), len(rows(b["retain"]))) for b, _, _ in dm.train_dataloader()]
    assert sizes and all(r == 2 for _, r in sizes)  # not 5 (batch_size x retain_per_forget)
    assert sum(f for f, _ in sizes) == len(forget) and max(f for f, _ in sizes) == 5


def test_forget_order_is_seeded_and_reshuffled_per_epoch(tiny_datamodule_kwargs):
    def order(seed, epoch):
        kw = {**tiny_datamodule_kwargs, "max_length": 12}
        dm = UnlearningDataModule(**kw, seed=seed, batch_size=2)
        loader = dm.train_dataloader()
        loader.flattened[0].sampler.set_epoch(epoch)  # what Lightning does every epoch
        return [r for b, _, _ in loader for r in rows(b["forget"])]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(order(0, 0)) == sorted(order(0, 1))


def test_without_retain_only_forget_batches(tiny_datamodule_kwargs):
    kwargs = {**tiny_datamodule_kwargs, "retain": None}
    dm = UnlearningDataModule(**kwargs, batch_size=4)
    batches = [b for b, _, _ in dm.train_dataloader()]
    assert batches and all(set(b) == {"forget"} for b in batches)
    assert "retain" not in dm.eval_split_names


def test_eval_loaders_are_named_and_carry_split_and_zlib(tiny_datamodule_kwargs):
    dm = UnlearningDataModule(**tiny_datamodule_kwargs, eval_batch_size=3)
    assert dm.eval_split_names == ("forget", "approximate", "retain", "general")
    loader = dm.val_dataloader()
    counts = Counter()
    for batch, _, dataloader_idx in loader:
        split = batch["split"]
        assert split == dm.eval_split_names[dataloader_idx]
        data = dm.eval_dataset(split)
        for i, row in zip(batch["doc_index"].tolist(), rows(batch)):
            assert (i, row) in set(zip(data["doc_index"], all_rows(data)))
        assert batch["zlib_len"].dtype == torch.long
        counts[split] += batch["input_ids"].shape[0]
    for split in dm.eval_split_names:
        data = dm.eval_dataset(split)
        assert counts[split] == len(data)
        # zlib_len is the compressed length of the chunk's own text
        assert data["zlib_len"] == [len(zlib.compress(t.encode("utf-8"))) for t in data["text"]]
    assert len(dm.eval_dataset("general")) == len(TINY_CORPUS["general"])  # short docs: 1 chunk


def test_eval_splits_keeps_only_the_named_splits(tiny_datamodule_kwargs):
    dm = UnlearningDataModule(**tiny_datamodule_kwargs, eval_splits=["forget"])
    assert dm.eval_split_names == ("forget",)
    splits = {batch["split"] for batch, _, _ in dm.val_dataloader()}
    assert splits == {"forget"}
    assert dm.train_dataloader() is not None  # training still has its retain stream
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['heldout'\]; choose from"):
        UnlearningDataModule(**tiny_datamodule_kwargs, eval_splits=["forget", "heldout"])
    no_general = {k: v for k, v in tiny_datamodule_kwargs.items() if k != "general"}
    with pytest.raises(ValueError, match=r"\['general'\] but no source.*pass general="):
        UnlearningDataModule(**no_general, eval_splits=["general"])


def test_eval_shards_are_read_longest_first():
    """Length-sorted evaluation batches (little padding); ranks still split the windows evenly."""
    lengths = [3, 9, 1, 7, 7, 2, 8]
    data = list(range(len(lengths)))
    shards = [
        list(loaders_mod.EvalShardSampler(data, num_replicas=2, rank=r, lengths=lengths))
        for r in (0, 1)
    ]
    assert shards == [[6, 4, 0, 2], [1, 3, 5]]
    plain = loaders_mod.EvalShardSampler(data, num_replicas=2, rank=0)
    assert list(plain) == [0, 2, 4, 6] and len(plain) == 4


# ------------------------------------------------------------------ chunking / packing
def test_chunking_preserves_tokens_and_stays_inside_documents(tiny_tokenizer):
    texts = TINY_CORPUS["forget"] + TINY_CORPUS["retain"]
    doc_ids = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    cols, stats = chunk_documents(tiny_tokenizer, texts, max_length=7, min_chunk_tokens=1)
    assert max(len(x) for x in cols["input_ids"]) == 7
    assert stats.tokens == sum(map(len, doc_ids)) == sum(len(x) for x in cols["input_ids"])
    assert stats.dropped_chunks == 0
    for doc, ids in enumerate(doc_ids):
        mine = [k for k, d in enumerate(cols["doc_index"]) if d == doc]
        # the chunks of a document are exactly its tokens in order, and its text in order
        assert sum((cols["input_ids"][k] for k in mine), []) == ids
        assert "".join(cols["text"][k] for k in mine) == texts[doc]
        assert len(mine) == math.ceil(len(ids) / 7)


def test_short_chunks_are_dropped_and_counted(tiny_tokenizer):
    text = TINY_CORPUS["forget"][1]
    n = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    max_length = n - 2  # leaves a 2-token tail
    cols, stats = chunk_documents(tiny_tokenizer, [text], max_length=max_length, min_chunk_tokens=5)
    assert cols["num_tokens"] == [max_length]
    assert (stats.dropped_chunks, stats.dropped_tokens) == (1, 2)


def test_chunks_start_with_the_tokenizers_prefix(tiny_model_dir, tmp_path):
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    text = TINY_CORPUS["forget"][1]
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    cols, stats = chunk_documents(tok, [text], max_length=8, min_chunk_tokens=1)
    assert all(ids[0] == bos and len(ids) <= 8 for ids in cols["input_ids"])
    assert stats.tokens == n and len(cols["input_ids"]) == math.ceil(n / 7)


def test_packing_fills_windows_and_restarts_positions(tiny_tokenizer):
    texts = TINY_CORPUS["retain"]
    eos = tiny_tokenizer.eos_token_id
    lengths = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
    cols, stats = pack_documents(
        tiny_tokenizer, texts, max_length=16, min_chunk_tokens=1, eos_token_id=eos
    )
    windows = cols["input_ids"]
    assert [len(w) for w in windows[:-1]] == [16] * (len(windows) - 1)
    assert sum(len(w) for w in windows) == sum(lengths) == stats.tokens
    stream = sum(windows, [])
    assert stream.count(eos) == len(texts)
    for ids, pos in zip(windows, cols["position_ids"]):
        assert pos[0] == 0
        for k in range(1, len(ids)):
            # a new document starts after an eos: its position restarts at 0
            assert pos[k] == (0 if ids[k - 1] == eos else pos[k - 1] + 1)


def test_collate_pads_with_ignored_labels(tiny_tokenizer):
    rows_in = [
        {"input_ids": [5, 6, 7], "zlib_len": 11, "doc_index": 0},
        {"input_ids": [8], "zlib_len": 9, "doc_index": 3},
    ]
    batch = PadCollator(pad_token_id=0, split="approximate")(rows_in)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert batch["split"] == "approximate"
    assert batch["zlib_len"].tolist() == [11, 9] and batch["doc_index"].tolist() == [0, 3]


def test_packed_training_batches(tiny_datamodule_kwargs):
    kw = {**tiny_datamodule_kwargs, "max_length": 16}
    dm = UnlearningDataModule(**kw, packing=True, batch_size=2)
    batches = [b["forget"] for b, _, _ in dm.train_dataloader()]
    full = [b for b in batches if b["attention_mask"].all()]
    assert len(full) >= len(batches) - 1  # only the batch holding the last window can have padding
    assert all("position_ids" in b for b in batches)
    for b in batches:
        assert ((b["labels"] == -100) == (b["attention_mask"] == 0)).all()
    # evaluation is never packed: one document per chunk
    assert "position_ids" not in dm.eval_dataset("forget").column_names


def test_windows_per_document_keeps_each_documents_first_windows(tiny_datamodule_kwargs):
    kw = {**tiny_datamodule_kwargs, "max_length": 12}
    every = UnlearningDataModule(**kw)
    every.setup("fit")
    first = UnlearningDataModule(**kw, windows_per_document=1)
    first.setup("fit")
    for role in ("forget", "retain"):
        full, kept = every.train_dataset(role), first.train_dataset(role)
        assert len(set(full["doc_index"])) < len(full)  # some documents have several windows
        expected = [i for i, d in enumerate(full["doc_index"]) if d not in full["doc_index"][:i]]
        assert kept["input_ids"] == [full["input_ids"][i] for i in expected], role
    # the evaluation splits keep every window
    assert len(first.eval_dataset("forget")) == len(every.eval_dataset("forget"))
    batches = [b["forget"] for b, _, _ in first.train_dataloader()]
    assert sum(len(b["input_ids"]) for b in batches) == len(first.train_dataset("forget"))
    with pytest.raises(ValueError, match="windows_per_document must be an integer >= 1"):
        UnlearningDataModule(**kw, windows_per_document=0)
    with pytest.raises(ValueError, match="packing=True lays documents end to end"):
        UnlearningDataModule(**kw, windows_per_document=1, packing=True)


def test_training_windows_of_a_source_with_parts_carry_their_part(tiny_datamodule_kwargs):
    kw = {**tiny_datamodule_kwargs, "max_length": 12}
    forget = [kw["forget"], kw["general"]]
    dm = UnlearningDataModule(**{**kw, "forget": forget}, batch_size=3, windows_per_document=2)
    dm.setup("fit")
    sizes = [len(read_documents(DataSource(path=p))) for p in forget]
    data = dm.train_dataset("forget")
    assert data["part"] == [int(d >= sizes[0]) for d in data["doc_index"]]
    assert set(data["part"]) == {0, 1}
    seen = []
    for batch, _, _ in dm.train_dataloader():
        assert batch["forget"]["part"].shape == (len(batch["forget"]["input_ids"]),)
        assert "part" not in batch["retain"]  # one part only
        seen += batch["forget"]["part"].tolist()
    assert sorted(seen) == sorted(data["part"])
    assert "part" not in dm.eval_dataset("forget").column_names  # evaluation: no part


def test_alternate_parts_gives_batches_of_one_part_taking_turns(tiny_datamodule_kwargs):
    kw = {**tiny_datamodule_kwargs, "max_length": 12}
    forget = {"parts": [kw["forget"], kw["general"]]}
    dm = UnlearningDataModule(**{**kw, "forget": forget}, batch_size=2, alternate_parts=True)
    dm.setup("fit")
    data = dm.train_dataset("forget")
    counts = Counter(data["part"])
    turns = [b["forget"]["part"].tolist() for b, _, _ in dm.train_dataloader()]
    # while both parts have windows left, the batches take turns and hold one part each
    both = 2 * min(counts[0] // 2, counts[1] // 2)
    assert [t[0] for t in turns[:both]] == [0, 1] * (both // 2)
    assert all(len(set(t)) == 1 for t in turns[:both])
    assert Counter(p for t in turns for p in t) == counts  # one pass over every window
    # the order is the seeded one: a resumed epoch skips exactly the batches done
    sampler = dm.train_dataloader().iterables["forget"].sampler
    full = list(sampler)
    sampler.resume_at(0, 4)
    assert list(sampler) == full[4:]
    with pytest.raises(ValueError, match="alternate_parts=True needs a forget source with parts"):
        UnlearningDataModule(**kw, alternate_parts=True)


def test_missing_pad_token_gets_eos_with_a_notice(tiny_datamodule_kwargs, caplog):
    dm = UnlearningDataModule(**tiny_datamodule_kwargs)
    with caplog.at_level(logging.INFO, logger="lightning_unlearn.data"):
        pad = dm.pad_token_id
    assert pad == dm.tokenizer.eos_token_id == 0
    assert dm.tokenizer.pad_token == dm.tokenizer.eos_token
    assert "no pad token" in caplog.text


# ------------------------------------------------------------------ cache
def test_cache_is_reused_and_rebuilt_after_a_change(tiny_datamodule_kwargs, tmp_path, monkeypatch):
    calls = Counter()
    real = splits_mod.chunk_documents

    def counting(tokenizer, texts, **kw):
        calls[len(texts)] += 1
        return real(tokenizer, texts, **kw)

    monkeypatch.setattr(splits_mod, "chunk_documents", counting)
    forget = write_jsonl(tmp_path / "f.jsonl", TINY_CORPUS["forget"])
    kwargs = {**tiny_datamodule_kwargs, "forget": str(forget), "retain": None}
    kwargs.update(approximate=None, general=None)

    UnlearningDataModule(**kwargs).setup("fit")
    assert sum(calls.values()) == 1  # train and eval forget share one entry
    second = UnlearningDataModule(**kwargs)
    second.setup("fit")
    assert sum(calls.values()) == 1  # reused
    assert len(second.train_dataset("forget")) > 0

    UnlearningDataModule(**{**kwargs, "max_length": 9}).setup("fit")
    assert sum(calls.values()) == 2
    write_jsonl(forget, TINY_CORPUS["forget"][:-1] + ["def changed():\n    pass\n"])
    UnlearningDataModule(**kwargs).setup("fit")
    assert sum(calls.values()) == 3
    # another tokenizer (different vocabulary) -> another entry
    from lightning_unlearn.testing import build_tiny_tokenizer

    other = tmp_path / "other-tok"
    build_tiny_tokenizer(other, vocab_size=300)
    UnlearningDataModule(**{**kwargs, "tokenizer": str(other)}).setup("fit")
    assert sum(calls.values()) == 4
    entries = [p for p in Path(kwargs["cache_dir"]).iterdir() if not p.name.startswith(".")]
    assert len(entries) == 4


def test_cache_dir_defaults_to_environment(monkeypatch, tmp_path):
    from lightning_unlearn.data.cache import default_cache_dir

    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


# ------------------------------------------------------------------ sharding
@pytest.mark.parametrize("n_forget", [8, 7])
def test_ranks_get_disjoint_shards_covering_every_split(tiny_model_dir, tmp_path, n_forget):
    forget = write_jsonl(tmp_path / "f.jsonl", TINY_CORPUS["forget"][:n_forget])
    kwargs = dict(
        forget=str(forget),
        retain=str(write_jsonl(tmp_path / "r.jsonl", TINY_CORPUS["retain"])),
        approximate=str(write_jsonl(tmp_path / "a.jsonl", TINY_CORPUS["approximate"][:3])),
        max_length=256,  # one chunk per document
        batch_size=2,
        cache_dir=str(tmp_path / "cache"),
    )
    per_rank = []
    for rank in range(2):
        dm = UnlearningDataModule(str(tiny_model_dir), **kwargs)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        train = [b for b, _, _ in dm.train_dataloader()]
        evals = {}
        for b, _, _ in dm.val_dataloader():
            evals.setdefault(b["split"], []).extend(b["doc_index"].tolist())
        per_rank.append(
            {
                "steps": len(train),
                "forget": [r for b in train for r in rows(b["forget"])],
                "retain": {r for b in train for r in rows(b["retain"])},
                "eval": evals,
            }
        )
    a, b = per_rank
    everything = all_rows(dm.train_dataset("forget"))
    assert a["steps"] == b["steps"]  # equal batch counts, or DDP would hang
    assert set(a["forget"]) | set(b["forget"]) == set(everything)
    overlap = set(a["forget"]) & set(b["forget"])
    assert len(overlap) == (n_forget % 2)  # only the documented padding repeats
    assert not a["retain"] & b["retain"]
    for split in dm.eval_split_names:  # evaluation: disjoint, complete, nothing twice
        ids = a["eval"].get(split, []) + b["eval"].get(split, [])
        assert sorted(ids) == list(range(len(dm.eval_dataset(split)))), split


# ------------------------------------------------------------------ sources
def test_file_formats_and_directories(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["first doc", "second, with a comma\nand a newline"]
    (tmp_path / "a.json").write_text(json.dumps([{"body": t} for t in texts]))
    (tmp_path / "a.csv").write_text(
        'body,id\n"first doc",1\n"second, with a comma\nand a newline",2\n'
    )
    pq.write_table(pa.table({"body": texts}), tmp_path / "a.parquet")
    for name in ("a.json", "a.csv", "a.parquet"):
        assert read_documents(DataSource(path=str(tmp_path / name), text_column="body")) == texts

    code = tmp_path / "repo"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "b.py").write_text("print('b')\n")
    (code / "a.py").write_text("print('a')\n")
    (code / "notes.txt").write_text("not code\n")
    (code / ".hidden").mkdir()
    (code / ".hidden" / "c.py").write_text("print('hidden')\n")
    (code / "blob.py").write_bytes(b"\x00\x01binary")
    assert read_documents(DataSource(path=str(code), glob="**/*.py")) == [
        "print('a')\n",
        "print('b')\n",
    ]
    assert len(read_documents(DataSource(path=str(code)))) == 3  # + notes.txt
    assert read_documents(DataSource(path=str(code / "notes.txt"))) == ["not code\n"]


def test_hub_dataset_loads_config_and_split(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    source = DataSource(hf_name=str(FIXTURE_HUB), hf_config="github", split="approximate")
    assert read_documents(source) == ["def sub(a, b):\n    return a - b\n"]
    arxiv = read_documents(DataSource(hf_name=str(FIXTURE_HUB), hf_config="arxiv", split="forget"))
    assert len(arxiv) == 2 and arxiv[0].startswith("We prove")
    with pytest.raises(SourceError, match="column 'content'.*'text'"):
        read_documents(
            DataSource(
                hf_name=str(FIXTURE_HUB),
                hf_config="general",
                split="evaluation",
                text_column="content",
            )
        )

    seen = {}
    real_load = datasets.load_dataset

    def fake_load(name, config, **kw):
        seen.update(name=name, config=config, **kw)
        return real_load(str(FIXTURE_HUB), config, split=kw["split"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    docs = read_documents(
        DataSource(
            hf_name="llmunlearn/unlearn_dataset", hf_config="arxiv", split="retain", revision="v1"
        )
    )
    assert seen == {
        "name": "llmunlearn/unlearn_dataset",
        "config": "arxiv",
        "split": "retain",
        "revision": "v1",
    }
    assert len(docs) == 2


# ------------------------------------------------------------------ bad input
def test_missing_path_names_it(tiny_model_dir, tmp_path):
    dm = UnlearningDataModule(
        str(tiny_model_dir), forget="data/nope.jsonl", cache_dir=str(tmp_path)
    )
    with pytest.raises(FileNotFoundError, match="forget set 'data/nope.jsonl' does not exist"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="hf_name: llmunlearn/unlearn_dataset"):
        read_documents(DataSource(path="llmunlearn/unlearn_dataset"), role="retain")


def test_empty_documents_dropped_with_count_and_error_if_none(tmp_path, caplog):
    path = write_jsonl(tmp_path / "x.jsonl", ["real text", "   ", "\n\t", "more text"])
    with caplog.at_level(logging.WARNING, logger="lightning_unlearn.data"):
        assert read_documents(DataSource(path=str(path)), role="forget") == [
            "real text",
            "more text",
        ]
    assert "dropped 2 empty document(s) of 4" in caplog.text and "x.jsonl" in caplog.text
    empty = write_jsonl(tmp_path / "empty.jsonl", ["  ", ""])
    with pytest.raises(
        SourceError, match=r"forget set '.*empty.jsonl' has 0 documents after removing empty ones"
    ):
        read_documents(DataSource(path=str(empty)), role="forget")


def test_wrong_text_column_lists_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ["a", "b"], column="content")
    with pytest.raises(SourceError, match=r"x.jsonl.*no column 'text'.*\['content'\]"):
        read_documents(DataSource(path=str(path)))


def test_undecodable_bytes_are_replaced_and_counted(tmp_path, caplog):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "bad.txt").write_bytes(b"caf\xe9 au lait \xff\xfe ok \xe2\x82\xac")
    with caplog.at_level(logging.WARNING, logger="lightning_unlearn.data"):
        docs = read_documents(DataSource(path=str(folder), glob="*.txt"))
    assert docs == ["caf\ufffd au lait \ufffd\ufffd ok \u20ac"]
    assert "replaced 3 undecodable byte sequence(s)" in caplog.text and "bad.txt" in caplog.text


def test_documents_too_short_for_any_chunk(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "tiny.jsonl", ["a", "b c"])
    dm = UnlearningDataModule(
        str(tiny_model_dir), forget=str(path), min_chunk_tokens=5, cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(
        SourceError, match="forget set '.*tiny.jsonl' has 0 windows .*min_chunk_tokens=5"
    ):
        dm.setup("fit")


def test_bad_arguments_are_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="retain_per_forget must be an integer >= 1"):
        UnlearningDataModule(str(tiny_model_dir), forget="x.jsonl", retain_per_forget=0)
    with pytest.raises(ValueError, match="retain_batch_size must be an integer >= 1 or None"):
        UnlearningDataModule(str(tiny_model_dir), forget="x.jsonl", retain_batch_size=0)
    with pytest.raises(ValueError, match="keep one"):
        UnlearningDataModule(
            str(tiny_model_dir), forget="x.jsonl", retain_batch_size=2, retain_per_forget=2
        )
    with pytest.raises(SourceError, match="exactly one of 'path' or 'hf_name'"):
        DataSource(path="a", hf_name="b")
    with pytest.raises(SourceError, match="unknown data source field"):
        DataSource.coerce({"pth": "a"})


# ------------------------------------------------------------------ CLI
def test_jsonargparse_builds_nested_sources(tiny_model_dir, tiny_corpus_dir):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(UnlearningDataModule, "data")
    config = {
        "data": {
            "tokenizer": str(tiny_model_dir),
            "forget": str(tiny_corpus_dir / "forget.jsonl"),
            "retain": {"path": str(tiny_corpus_dir / "retain.jsonl"), "limit": 3},
            "approximate": {
                "hf_name": str(FIXTURE_HUB),
                "hf_config": "arxiv",
                "split": "approximate",
            },
            "retain_per_forget": 2,
        }
    }
    cfg = parser.parse_object(config)
    init = parser.instantiate_classes(cfg)
    dm = init.data
    assert isinstance(dm, UnlearningDataModule)
    assert dm.train_sources["forget"].path.endswith("forget.jsonl")
    assert dm.train_sources["retain"] == DataSource(
        path=str(tiny_corpus_dir / "retain.jsonl"), limit=3
    )
    assert dm.eval_sources["approximate"].hf_config == "arxiv"
    assert dm.retain_per_forget == 2
    assert "retain windows per forget window" in parser.format_help()
