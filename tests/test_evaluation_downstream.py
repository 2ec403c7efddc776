"""Downstream utility through lm-eval, offline, with the tiny local task in fixtures/lm_eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_unlearn.evaluation.downstream import evaluate_downstream, main_evaluate

TASKS = Path(__file__).parent / "fixtures" / "lm_eval"


def _expected_accuracy(model_dir) -> float:
    """The multiple-choice accuracy computed here, without lm-eval: argmax of log P(choice | q)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    docs = [json.loads(line) for line in (TASKS / "tiny_mc.jsonl").read_text().splitlines()]
    right = 0
    for doc in docs:
        context = tokenizer(doc["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer(doc["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            token_lp = logp.gather(-1, targets[:, None]).squeeze(-1)
            scores.append(token_lp[len(context) - 1 :].sum().item())
        right += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return right / len(docs)


@pytest.mark.slow
def test_lm_eval_tiny_task_accuracy_matches_direct_computation(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "downstream.json"
    results = main_evaluate(
        [
            "--model",
            str(tiny_model_dir),
            "--tasks",
            "tiny_mc",
            "--include_path",
            str(TASKS),
            "--output",
            str(out),
        ]
    )
    acc = results["results"]["tiny_mc"]["acc,none"]
    assert acc == pytest.approx(_expected_accuracy(tiny_model_dir), abs=1e-9)
    assert 0.0 <= acc <= 1.0 and results["config"]["tasks"] == ["tiny_mc"]
    assert json.loads(out.read_text())["results"]["tiny_mc"]["acc,none"] == pytest.approx(acc)
    assert '"acc,none"' in capsys.readouterr().out


def test_lm_eval_bad_arguments_fail_clearly(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no lm-eval task given"):
        evaluate_downstream(tiny_model_dir, [" ", ""])
    with pytest.raises(FileNotFoundError, match="is not a folder of task YAML files"):
        evaluate_downstream(tiny_model_dir, ["tiny_mc"], include_path=tmp_path / "missing")
