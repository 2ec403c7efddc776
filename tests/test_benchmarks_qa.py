"""TOFU and MUSE through ``lightning-unlearn evaluate``, on local fixtures with the benchmarks'
real schemas (tests/fixtures/data/{tofu,muse}; nothing is downloaded), and TOFU's aggregation fed
TOFU's own per-question numbers (tests/fixtures/references/tofu_aggregate.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import ks_2samp
from test_reference_numbers import load

from lightning_unlearn.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
TOFU, MUSE = FIXTURES / "tofu", FIXTURES / "muse"
TOFU_REFERENCE = load("tofu_aggregate.json")

# KnowMem's generations are set here (the tiny models answer noise): per question the text the
# "model" writes after MUSE's prompt, and its ROUGE-L against the answer, worked out by hand on
# lower-cased words (MUSE: rouge_score's rougeL, no stemmer; F1 = 2PR / (P + R)).
KNOWMEM_GENERATIONS = {
    # forget answers: "the old ferry pier", "Elin Rask", "colder currents along the coast"
    "What did the Harbourton town council vote to rebuild?": "the old ferry pier\n\nQuestion: x",
    # cut at "\nQuestion" -> "Elin": LCS 1, P = 1, R = 1/2, F1 = 2/3
    "Who is the mayor of Harbourton?": "Elin\nQuestion: who",
    # "the coast is colder": LCS "the coast" = 2, P = 2/4, R = 2/5, F1 = 0.4 / 0.9 = 4/9
    "What did the cooperative credit for the large herring catch?": "the coast is colder",
    # retain answers: "the regional robotics contest", "three weeks", "twelve local families"
    # "a robotics contest": LCS 2, P = 2/3, R = 2/4, F1 = (2/3) / (7/6) = 4/7
    "What did Millbrook High students win?": "a robotics contest",
    "How long will the Millbrook bypass lanes be closed?": "four weeks",  # 1/2, 1/2 -> 1/2
    "Who runs the new bakery cooperative in Cedar Falls?": "nobody",  # 0
}
KNOWMEM_F1 = {"forget": (1 + 2 / 3 + 4 / 9) / 3, "retain": (4 / 7 + 1 / 2 + 0) / 3}
KNOWMEM_RECALL = {"forget": (1 + 1 / 2 + 2 / 5) / 3, "retain": (2 / 4 + 1 / 2 + 0) / 3}


def _canned_knowmem(tokenizer):
    def generate(model, prompts, **kwargs):
        out = []
        for prompt in prompts:
            text = tokenizer.decode(prompt, skip_special_tokens=True)
            question = text.rsplit("Question: ", 1)[1].removesuffix("\nAnswer: ")
            out.append(tokenizer(KNOWMEM_GENERATIONS[question], add_special_tokens=False).input_ids)
        return out

    return generate


def _records(path: Path) -> list[dict]:
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _canned_tofu_answers():
    """TOFU's greedy answers, set here: the right answer itself (ROUGE-L recall 1 whatever the
    tokenisation and stemming) or a word of none (recall 0); per set the recalls 1, 0, 1 (retain)
    and 1, 1, 0 (world facts), each set's mean 2/3."""
    canned = {}
    for file, right in (("retain_perturbed.json", (True, False, True)),
                        ("world_facts_perturbed.json", (True, True, False))):  # fmt: skip
        for record, keep in zip(_records(TOFU / file), right, strict=True):
            canned[record["question"]] = record["answer"] if keep else "zzzz"
    return lambda model, tokenizer, questions, **kw: [canned[q] for q in questions]


def test_evaluate_computes_tofu_and_muse_metrics(
    tiny_model_dir, trained_tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch
):
    from lightning_unlearn.evaluation import muse, tofu

    # the generations are set here (the tiny models answer noise, ROUGE 0 and utility 0)
    monkeypatch.setattr(muse, "greedy_generate", _canned_knowmem(tiny_tokenizer))
    monkeypatch.setattr(tofu, "generate_answers", _canned_tofu_answers())
    # the retain model is the trained one: the "before" column (the untrained model) is compared
    # with a different model, and the "after" column with the model it is
    metrics = [
        {"class_path": "lightning_unlearn.evaluation.Perplexity"},
        {"class_path": "lightning_unlearn.evaluation.TOFU", "init_args": {
            "forget": str(TOFU / "forget10_perturbed.json"),
            "retain": str(TOFU / "retain_perturbed.json"),
            "world_facts": str(TOFU / "world_facts_perturbed.json"),
            "retain_model": str(trained_tiny_model_dir), "max_new_tokens": 8, "max_length": 128}},
        {"class_path": "lightning_unlearn.evaluation.KnowMem", "init_args": {
            "forget_qa": str(MUSE / "knowmem" / "forget_qa.json"),
            "retain_qa": str(MUSE / "knowmem" / "retain_qa.json"), "max_new_tokens": 8}},
        {"class_path": "lightning_unlearn.evaluation.VerbatimMemorisation", "init_args": {
            "prefix_tokens": 8, "continuation_tokens": 16}},
        {"class_path": "lightning_unlearn.evaluation.PrivLeak"},
        {"class_path": "lightning_unlearn.evaluation.Memorisation"},
    ]  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"class_path": "lightning_unlearn.data.UnlearningDataModule", "init_args": {
            "forget": str(MUSE / "raw" / "forget.json"),
            "approximate": str(MUSE / "raw" / "holdout.json"),
            "eval_retain": str(MUSE / "raw" / "retain1.json"),
            "max_length": 128, "eval_batch_size": 4, "cache_dir": str(tmp_path / "cache")}},
        "metrics": metrics,
    }))  # fmt: skip
    out = tmp_path / "out"
    code = main(["evaluate", "--config", str(config), "--model", str(trained_tiny_model_dir),
                 "--compare", str(tiny_model_dir), "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    after, before = report["after"], report["before"]
    for key in ("tofu/retain_probability", "tofu/world_facts_rouge_l_recall", "verbmem/forget_rouge_l",
                "privleak/privleak", "memorisation/forget_exact"):  # fmt: skip
        assert key in after and after[key] is not None, key
    ratios = {column: np.array(report["documents"][column]["tofu_forget"]["tofu/truth_ratio"])
              for column in ("after", "before")}  # fmt: skip
    assert len(ratios["after"]) == 3  # one per forget question
    # the two models disagree on the forget questions, so the comparison below is not trivial
    assert not np.allclose(ratios["after"], ratios["before"])
    # forget quality = TOFU's get_forget_quality, ks_2samp(unlearned, retain).pvalue, on the
    # stored per-question ratios; the retain model's ratios are the trained model's (after)
    expected = ks_2samp(ratios["before"], ratios["after"]).pvalue
    assert expected < 1.0
    assert before["tofu/forget_quality"] == pytest.approx(expected, abs=1e-12)
    assert after["tofu/forget_quality"] == pytest.approx(1.0)  # the retain model itself
    # TOFU's forget truth ratio: mean(min(R, 1/R)) of the per-question R (aggregate_eval_stat.py)
    for column, values in (("after", after), ("before", before)):
        r = ratios[column]
        assert values["tofu/forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(r, 1 / r)))
    # model utility: the harmonic mean n / sum(1 / x) of the six numbers (no real authors)
    parts = [after[f"tofu/{name}_{kind}"] for name in ("retain", "world_facts")
             for kind in ("probability", "rouge_l_recall", "truth_ratio_score")]  # fmt: skip
    assert parts[1] == pytest.approx(2 / 3) and parts[4] == pytest.approx(2 / 3)  # canned
    assert all(0.0 < v <= 1.0 for v in parts), parts
    assert after["tofu/model_utility"] == pytest.approx(6 / sum(1 / v for v in parts), abs=1e-12)
    # KnowMem on the canned answers, per question and averaged (ROUGE-L F1 headline, as MUSE)
    for values in (after, before):
        for split in ("forget", "retain"):
            f1 = values[f"knowmem/{split}_rouge_l_f1"]
            assert f1 == pytest.approx(KNOWMEM_F1[split], abs=1e-6), split
            recall = values[f"knowmem/{split}_rouge_l_recall"]
            assert recall == pytest.approx(KNOWMEM_RECALL[split], abs=1e-6), split
    assert report["documents"]["after"]["knowmem_forget"]["knowmem/rouge_l_f1"] == pytest.approx(
        [1.0, 2 / 3, 4 / 9], abs=1e-6
    )
    md = (out / "report.md").read_text()
    assert "TOFU forget quality (KS p-value)" in md and "KnowMem forget" in md
    assert "VerbMem forget (ROUGE-L F1 on text" in md and "PrivLeak" in md


# TOFU's sets, as TOFU names its result files, and the name of each in this library
TOFU_FILES = {
    "forget": "eval_log_forget.json",
    "retain": "eval_log.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
}


def test_tofu_metric_on_tofus_per_question_numbers_gives_tofus_aggregate(tmp_path, monkeypatch):
    """TOFU.compute with the model's scoring replaced by TOFU's stored per-question losses and
    ROUGE recalls (``tofu_aggregate.json``, the input of aggregate_eval_stat.py): its forget
    quality, model utility, forget truth ratio and the nine utility numbers are TOFU's output."""
    import torch

    import lightning_unlearn.models
    from lightning_unlearn.evaluation import tofu

    class Model:  # stands for a model: only its identity is read
        def eval(self):
            return self

    unlearned, retain = Model(), Model()
    sources, losses = {}, {}
    for name, file in TOFU_FILES.items():
        records = []
        for key in TOFU_REFERENCE["unlearned"][file]["avg_gt_loss"]:
            q = f"{name} {key}"
            perturbed = len(TOFU_REFERENCE["unlearned"][file]["average_perturb_loss"][key])
            records.append({"question": q, "answer": "gt", "paraphrased_answer": "para",
                            "perturbed_answer": [f"p{i}" for i in range(perturbed)]})  # fmt: skip
            for model, column in ((unlearned, "unlearned"), (retain, "retain")):
                data = TOFU_REFERENCE[column][file]
                losses[model, q, "gt"] = data["avg_gt_loss"][key]
                losses[model, q, "para"] = data["avg_paraphrased_loss"][key]
                for i, value in enumerate(data["average_perturb_loss"][key]):
                    losses[model, q, f"p{i}"] = value
        sources[name] = tmp_path / f"{name}.json"
        sources[name].write_text(json.dumps(records))

    def logprob_means(model, tokenizer, pairs, **kwargs):  # TOFU stores -mean log-prob
        return torch.tensor([-losses[model, q, a] for q, a in pairs], dtype=torch.float64)

    def recalls(generated, references, **kwargs):  # the "generation" is the question
        assert kwargs.get("use_stemmer") is True
        found = []
        for q in generated:
            name, key = q.split(" ")
            found.append(TOFU_REFERENCE["unlearned"][TOFU_FILES[name]]["rougeL_recall"][key])
        return {"recall": found}

    monkeypatch.setattr(tofu, "answer_logprob_means", logprob_means)
    monkeypatch.setattr(tofu, "generate_answers", lambda model, tok, questions, **kw: questions)
    monkeypatch.setattr(tofu, "rouge_l", recalls)
    monkeypatch.setattr(lightning_unlearn.models, "load_causal_lm", lambda path: retain)
    metric = tofu.TOFU(**{name: str(path) for name, path in sources.items()},
                       retain_model="retain")  # fmt: skip
    values = metric.compute(unlearned, None, {}).values
    expected = TOFU_REFERENCE["model_utility"]
    tofu_names = {"retain": "Retain", "real_authors": "Real Authors", "world_facts": "Real World"}
    for name, theirs in tofu_names.items():
        for kind, their_kind in (("probability", "Prob."), ("rouge_l_recall", "ROUGE"),
                                 ("truth_ratio_score", "Truth Ratio")):  # fmt: skip
            assert values[f"tofu/{name}_{kind}"] == pytest.approx(
                expected[f"{their_kind} {theirs}"], abs=1e-12
            ), (name, kind)
    assert values["tofu/model_utility"] == pytest.approx(expected["Model Utility"], abs=1e-12)
    assert values["tofu/forget_truth_ratio"] == pytest.approx(
        expected["Truth Ratio Forget"], abs=1e-12
    )
    assert values["tofu/forget_quality"] == pytest.approx(
        TOFU_REFERENCE["forget_quality"]["Forget Quality"], abs=1e-12
    )
