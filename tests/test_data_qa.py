"""Question–answer data: TOFU / MUSE schemas from local files and dataset folders, prompt
masking (no prompt token is a target), the chat template, the cache key, bad input, and a
``fit`` on TOFU-format data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_CORPUS, write_jsonl

from lightning_unlearn.data import (
    DataSource,
    PadCollator,
    QARecord,
    SourceError,
    UnlearningDataModule,
    encode_qa,
    qa_documents,
    read_documents,
    read_qa,
)
from lightning_unlearn.data import splits as splits_mod
from lightning_unlearn.data.tokenize import special_prefix

FIXTURES = Path(__file__).parent / "fixtures" / "data"
TOFU = FIXTURES / "tofu"
MUSE = FIXTURES / "muse"
# a chat template in the style of chat models: special token, role, content; then the
# assistant's turn is opened by add_generation_prompt
CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant: {% endif %}"
)


def qa(path, **kw) -> DataSource:
    return DataSource(path=str(path), question_column="question", **kw)


def chat_ids(tokenizer, messages) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")


# ------------------------------------------------------------------ schemas
def test_tofu_and_muse_schemas_read_from_local_files():
    forget = read_qa(qa(TOFU / "forget10.json"), role="forget")
    assert len(forget) == 4 and all(isinstance(r, QARecord) and not r.extras for r in forget)
    assert forget[0].question.startswith("Who is the author")

    perturbed = read_qa(qa(TOFU / "forget10_perturbed.json"))
    assert len(perturbed) == 3
    assert perturbed[0].question == forget[0].question and perturbed[0].answer == forget[0].answer
    assert set(perturbed[0].extras) == {"paraphrased_answer", "perturbed_answer"}
    assert isinstance(perturbed[0].extras["paraphrased_answer"], str)
    assert [len(r.extras["perturbed_answer"]) for r in perturbed] == [5, 5, 5]
    paraphrased = read_qa(qa(TOFU / "forget10_perturbed.json", answer_column="paraphrased_answer"))
    assert paraphrased[0].answer == perturbed[0].extras["paraphrased_answer"]
    assert "answer" in paraphrased[0].extras
    facts = read_qa(qa(TOFU / "world_facts_perturbed.json"))
    assert facts[0].answer == "Lisbon" and set(facts[0].extras) == {"perturbed_answer"}

    knowmem = read_qa(qa(MUSE / "knowmem" / "forget_qa.json"))  # a JSON list
    assert [r.answer for r in knowmem][:2] == ["the old ferry pier", "Elin Rask"]
    verbmem = read_qa(
        DataSource(
            path=str(MUSE / "verbmem" / "forget.json"), question_column="prompt", answer_column="gt"
        )
    )
    assert len(verbmem) == 3 and verbmem[0].answer.startswith(" the old ferry pier")
    raw = read_documents(DataSource(path=str(MUSE / "raw" / "forget.json")))
    assert len(raw) == 3 and raw[0].startswith("HARBOURTON")
    # a directory of QA tables, and the other table formats
    assert len(read_qa(qa(TOFU, glob="forget10*.json"))) == 4 + 3


def test_csv_and_parquet_qa_tables(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"question": "Q1?", "answer": "A1", "id": 1},
        {"question": "Q2?", "answer": "A2", "id": 2},
    ]
    (tmp_path / "x.csv").write_text("question,answer,id\nQ1?,A1,1\nQ2?,A2,2\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    for name, ids in (("x.csv", ["1", "2"]), ("x.parquet", [1, 2])):
        records = read_qa(qa(tmp_path / name))
        assert [(r.question, r.answer, r.extras["id"]) for r in records] == [
            ("Q1?", "A1", ids[0]),
            ("Q2?", "A2", ids[1]),
        ]


def test_schemas_load_through_datasets_like_the_hub(hf_cache, monkeypatch):
    tofu = read_qa(
        DataSource(hf_name=str(TOFU), hf_config="forget10_perturbed", question_column="question")
    )
    assert tofu == read_qa(qa(TOFU / "forget10_perturbed.json"))
    knowmem = read_qa(
        DataSource(
            hf_name=str(MUSE), hf_config="knowmem", split="retain_qa", question_column="question"
        )
    )
    assert knowmem == read_qa(qa(MUSE / "knowmem" / "retain_qa.json"))
    raw = read_documents(DataSource(hf_name=str(MUSE), hf_config="raw", split="holdout"))
    assert len(raw) == 3 and raw[0].startswith("PINE RIDGE")
    with pytest.raises(
        SourceError, match=r"no column 'question'.*\['gt', 'prompt'\].*question_column"
    ):
        read_qa(
            DataSource(
                hf_name=str(MUSE), hf_config="verbmem", split="forget", question_column="question"
            )
        )

    import datasets

    seen = {}
    real_load = datasets.load_dataset

    def fake_load(name, config, **kw):
        seen.update(name=name, config=config, **kw)
        return real_load(str(TOFU), config, split=kw["split"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    records = read_qa(
        DataSource(hf_name="locuslab/TOFU", hf_config="forget10", question_column="question")
    )
    assert seen == {"name": "locuslab/TOFU", "config": "forget10", "split": "train"}
    assert len(records) == 4


# ------------------------------------------------------------------ encoding
def test_encode_qa_without_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    assert not tok.chat_template
    ids, p = encode_qa(tok, "What is the capital of Portugal?", "Lisbon", max_length=64)
    question_ids = tok("What is the capital of Portugal?", add_special_tokens=False)["input_ids"]
    assert ids[:p] == special_prefix(tok) + question_ids
    assert ids[p:] == tok(" Lisbon", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # a system prompt is a paragraph before the question
    ids, p = encode_qa(tok, "Q?", "A", max_length=64, system_prompt="Be brief.")
    assert ids[:p] == tok("Be brief.\n\nQ?", add_special_tokens=False)["input_ids"]


def test_chat_template_is_applied_when_present(chat_tokenizer, tiny_tokenizer):
    tok = chat_tokenizer
    question, answer = "Who wrote 'Salt Lanterns'?", "Maren Okonkwo-Lind"
    ids, p = encode_qa(tok, question, answer, max_length=256)
    # the prompt is exactly apply_chat_template(..., add_generation_prompt=True)'s ids
    assert ids[:p] == chat_ids(tok, [{"role": "user", "content": question}])
    assert tok.decode(ids[:p]).endswith("<|endoftext|>assistant: ")
    assert ids[p:] == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    ids_s, p_s = encode_qa(
        tok, question, answer, max_length=256, system_prompt=system[0]["content"]
    )
    assert ids_s[:p_s] == chat_ids(tok, [*system, {"role": "user", "content": question}])
    assert ids_s[p_s:] == ids[p:]
    # without a chat template, none of it
    plain, p_plain = encode_qa(tiny_tokenizer, question, answer, max_length=256)
    assert "assistant" not in tiny_tokenizer.decode(plain) and p_plain < p


def test_long_answer_is_cut_never_the_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    question, answer = "Q?", "one two three four five six seven eight nine ten " * 3
    full, p = encode_qa(tok, question, answer, max_length=512)
    assert full[-1] == tok.eos_token_id
    cut, p_cut = encode_qa(tok, question, answer, max_length=p + 4)
    assert p_cut == p and cut == full[: p + 4] and cut[-1] != tok.eos_token_id
    cols, stats = qa_documents(tok, [(question, answer)], max_length=p + 4)
    assert stats.truncated == 1 and cols["num_tokens"] == [4]
    assert answer.startswith(cols["text"][0]) and cols["text"][0]
    with pytest.raises(
        ValueError, match=r"no room for its answer in max_length=3; raise max_length"
    ):
        encode_qa(tok, "a question far longer than three tokens", "A", max_length=3)


def test_qa_documents_columns(tiny_tokenizer):
    records = read_qa(qa(TOFU / "forget10.json"))
    cols, stats = qa_documents(tiny_tokenizer, records, max_length=128)
    assert set(cols) == {"input_ids", "text", "doc_index", "num_tokens", "zlib_len", "prompt_len"}
    assert cols["doc_index"] == list(range(4)) and cols["text"] == [r.answer for r in records]
    for r, ids, p, n in zip(records, cols["input_ids"], cols["prompt_len"], cols["num_tokens"]):
        assert (ids, p) == encode_qa(tiny_tokenizer, r.question, r.answer, max_length=128)
        assert n == len(ids) - p
    assert stats.tokens == sum(cols["num_tokens"]) and stats.truncated == 0


# ------------------------------------------------------------------ masking
def test_collator_masks_the_prompt():
    rows = [
        {"input_ids": [5, 6, 7, 8], "prompt_len": 2},
        {"input_ids": [9, 10], "prompt_len": 1},
    ]
    batch = PadCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def _check_row(ids, labels, mask, expected_ids, prompt_len):
    n = len(expected_ids)
    assert ids[:n] == expected_ids and sum(mask) == n
    assert 0 < prompt_len < n
    assert all(x == -100 for x in labels[:prompt_len]), "a prompt token is a target"
    assert labels[prompt_len:n] == expected_ids[prompt_len:], "an answer token is not a target"
    assert all(x == -100 for x in labels[n:])


def test_no_prompt_token_of_a_qa_record_is_a_target(tiny_model_dir, tiny_corpus_dir, tmp_path):
    forget_src, retain_src = qa(TOFU / "forget10.json"), qa(TOFU / "retain90.json")
    dm = UnlearningDataModule(
        str(tiny_model_dir),
        forget=forget_src,
        retain=retain_src,
        approximate=str(tiny_corpus_dir / "approximate.jsonl"),
        eval_forget=qa(TOFU / "forget10_perturbed.json"),
        max_length=48,  # the longer answers are cut
        batch_size=3,
        eval_batch_size=2,
        cache_dir=str(tmp_path / "cache"),
    )
    tok = dm.tokenizer
    expected = {}
    for src in (forget_src, retain_src):
        for r in read_qa(src):
            ids, p = encode_qa(tok, r.question, r.answer, max_length=48)
            expected[tuple(ids)] = p
    seen = Counter()
    for batch, _, _ in dm.train_dataloader():
        for part, b in batch.items():
            for ids, labels, mask in zip(
                b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist()
            ):
                row = tuple(ids[: sum(mask)])
                _check_row(ids, labels, mask, list(row), expected[row])
                seen[part] += 1
    assert seen["forget"] == 4 and seen["retain"] >= 3

    # evaluation: QA splits score only answer tokens; the text split scores every token
    records = dm.qa_records("forget")
    assert len(records) == 3 and "perturbed_answer" in records[0].extras
    splits = Counter()
    for batch, _, _ in dm.val_dataloader():
        split = batch["split"]
        for doc, ids, labels, mask in zip(
            batch["doc_index"].tolist(),
            batch["input_ids"].tolist(),
            batch["labels"].tolist(),
            batch["attention_mask"].tolist(),
        ):
            n = sum(mask)
            if split == "approximate":
                assert labels[:n] == ids[:n]
            else:
                rec = records[doc] if split == "forget" else read_qa(retain_src)[doc]
                want, p = encode_qa(tok, rec.question, rec.answer, max_length=48)
                _check_row(ids, labels, mask, want, p)
            splits[split] += 1
    assert splits == {"forget": 3, "retain": 5, "approximate": len(TINY_CORPUS["approximate"])}
    # a row's text is its answer, or the part of it that was kept
    texts = dm.eval_dataset("forget")["text"]
    assert all(t and r.answer.startswith(t) for t, r in zip(texts, records))
    assert any(t != r.answer for t, r in zip(texts, records))  # max_length=48 cut one


def test_eval_rows_follow_the_records(tiny_model_dir, tmp_path):
    dm = UnlearningDataModule(
        str(tiny_model_dir),
        forget=qa(MUSE / "knowmem" / "forget_qa.json"),
        max_length=128,
        cache_dir=str(tmp_path / "cache"),
    )
    data = dm.eval_dataset("forget")
    records = dm.qa_records("forget")
    assert list(data["doc_index"]) == [0, 1, 2]
    assert list(data["text"]) == [r.answer for r in records]
    assert all(p > 0 for p in data["prompt_len"])


# ------------------------------------------------------------------ cache
def test_cache_key_covers_qa_layout_chat_template_and_system_prompt(
    tiny_model_dir, chat_tokenizer, tmp_path, monkeypatch
):
    calls = []
    real = splits_mod.qa_documents

    def counting(tokenizer, records, **kw):
        calls.append(len(records))
        return real(tokenizer, records, **kw)

    monkeypatch.setattr(splits_mod, "qa_documents", counting)
    kwargs = dict(forget=qa(TOFU / "forget10.json"), max_length=160, cache_dir=str(tmp_path / "c"))

    plain = UnlearningDataModule(str(tiny_model_dir), **kwargs)
    plain.setup("fit")
    assert len(calls) == 1  # train and eval forget share one entry
    UnlearningDataModule(str(tiny_model_dir), **kwargs).setup("fit")
    assert len(calls) == 1  # reused

    chat = UnlearningDataModule(chat_tokenizer, **kwargs)
    chat.setup("fit")
    assert len(calls) == 2  # same vocabulary, another chat template -> another entry
    with_template, without = chat.eval_dataset("forget"), plain.eval_dataset("forget")
    assert list(with_template["input_ids"]) != list(without["input_ids"])
    assert all(a > b for a, b in zip(with_template["prompt_len"], without["prompt_len"]))

    UnlearningDataModule(chat_tokenizer, **kwargs, system_prompt="Be brief.").setup("fit")
    assert len(calls) == 3
    para = {
        **kwargs,
        "forget": qa(TOFU / "forget10_perturbed.json", answer_column="paraphrased_answer"),
    }
    UnlearningDataModule(str(tiny_model_dir), **para).setup("fit")
    assert len(calls) == 4


# ------------------------------------------------------------------ bad input
def test_bad_qa_input_is_named(tiny_model_dir, tmp_path):
    rows = [{"prompt": "Q?", "answer": "A"}]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        SourceError,
        match=r"x.jsonl.*no column 'question'; columns that exist: \['answer', 'prompt'\]",
    ):
        read_qa(qa(path), role="forget")
    with pytest.raises(SourceError, match=r"no column 'reply'.*Set answer_column"):
        read_qa(DataSource(path=str(path), question_column="prompt", answer_column="reply"))
    with pytest.raises(SourceError, match="'perturbed_answer' holds a list, not a string"):
        read_qa(qa(TOFU / "world_facts_perturbed.json", answer_column="perturbed_answer"))
    with pytest.raises(SourceError, match="question_column and answer_column are both 'answer'"):
        DataSource(path=str(path), question_column="answer")
    with pytest.raises(SourceError, match="has no question_column"):
        read_qa(DataSource(path=str(path)))
    # as documents (the model card hashes the forget set), a record is its two lines
    assert read_documents(DataSource(path=str(path), question_column="prompt")) == ["Q?\nA"]

    empty = write_jsonl(tmp_path / "empty.jsonl", ["  "], column="answer")
    empty.write_text('{"question": "Q?", "answer": " "}\n{"question": "", "answer": "A"}\n')
    with pytest.raises(
        SourceError, match=r"forget set '.*empty.jsonl' has 0 question–answer records .*\(2 read\)"
    ):
        read_qa(qa(empty), role="forget")

    with pytest.raises(
        ValueError, match=r"packing=True cannot be used with question–answer.*forget"
    ):
        UnlearningDataModule(str(tiny_model_dir), forget=qa(TOFU / "forget10.json"), packing=True)

    dm = UnlearningDataModule(
        str(tiny_model_dir),
        forget=qa(TOFU / "forget10.json"),
        max_length=4,
        cache_dir=str(tmp_path),
    )
    with pytest.raises(ValueError, match=r"max_length=4; raise max_length"):
        dm.setup("fit")

    text = UnlearningDataModule(
        str(tiny_model_dir), forget=str(MUSE / "raw" / "forget.json"), cache_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="holds documents, not question–answer records"):
        text.qa_records("forget")
    with pytest.raises(KeyError, match="no evaluation split 'general'"):
        text.qa_records("general")


# ------------------------------------------------------------------ fit
@pytest.mark.slow
def test_fit_trains_on_tofu_format_qa_data(tiny_model_dir, tiny_corpus_dir, tmp_path, capsys):
    from lightning_unlearn.cli import main

    config = {
        "seed_everything": 3,
        "model": {
            "class_path": "lightning_unlearn.GradientAscentDescent",
            "init_args": {
                "model_name_or_path": str(tiny_model_dir),
                "learning_rate": 1e-2,
                "warmup_ratio": 0.0,
            },
        },
        "data": {
            "class_path": "lightning_unlearn.data.UnlearningDataModule",
            "init_args": {
                "forget": {"path": str(TOFU / "forget10.json"), "question_column": "question"},
                "retain": {"path": str(TOFU / "retain90.json"), "question_column": "question"},
                "approximate": str(tiny_corpus_dir / "approximate.jsonl"),
                "max_length": 64,
                "batch_size": 2,
                "eval_batch_size": 8,
                "cache_dir": str(tmp_path / "cache"),
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    args = ["fit", "--config", str(path), "--stop_at_target", "false", "--output_dir", str(out)]
    assert main(args) == 0
    assert "report:" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2
    before, after = report["before"]["forget/nll"], report["after"]["forget/nll"]
    assert torch.isfinite(torch.tensor([before, after])).all()
    assert after > before  # the forget loss (answer tokens only) changed: gradient ascent raised it
