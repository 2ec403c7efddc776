"""TOFU and MUSE through ``lightning-unlearn evaluate``, on local fixtures with the benchmarks'
real schemas (tests/fixtures/data/{tofu,muse}; nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from scipy.stats import ks_2samp

from lightning_unlearn.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
TOFU, MUSE = FIXTURES / "tofu", FIXTURES / "muse"


def test_evaluate_computes_tofu_and_muse_metrics(tiny_model_dir, trained_tiny_model_dir, tmp_path):
    # the retain model's truth ratios: computed by a first evaluate of the "retain model"
    metrics = [
        {"class_path": "lightning_unlearn.evaluation.Perplexity"},
        {"class_path": "lightning_unlearn.evaluation.TOFU", "init_args": {
            "forget": str(TOFU / "forget10_perturbed.json"),
            "retain": str(TOFU / "retain_perturbed.json"),
            "world_facts": str(TOFU / "world_facts_perturbed.json"),
            "retain_model": str(tiny_model_dir), "max_new_tokens": 8, "max_length": 128}},
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
    after = report["after"]
    for key in (
        "tofu/forget_quality",
        "tofu/model_utility",
        "tofu/forget_truth_ratio",
        "tofu/retain_probability",
        "tofu/world_facts_rouge_l_recall",
        "knowmem/forget_rouge_l_recall",
        "knowmem/retain_rouge_l_recall",
        "verbmem/forget_rouge_l",
        "privleak/privleak",
        "memorisation/forget_exact",
    ):
        assert key in after and after[key] is not None, key  # fmt: skip
    assert 0.0 <= after["tofu/forget_quality"] <= 1.0
    # model utility: the harmonic mean of the retain and world-facts numbers (no real authors)
    parts = [after[f"tofu/{name}_{kind}"] for name in ("retain", "world_facts")
             for kind in ("probability", "rouge_l_recall", "truth_ratio_score")]  # fmt: skip
    from lightning_unlearn.evaluation.benchmarks_math import tofu_model_utility

    assert after["tofu/model_utility"] == pytest.approx(tofu_model_utility(parts))
    assert all(0.0 <= v <= 1.0 for v in parts) and parts[0] > 0.0
    # the "before" column is the retain model itself: its forget quality against itself is 1
    assert report["before"]["tofu/forget_quality"] == pytest.approx(1.0)
    # forget quality is scipy's KS p-value on the two models' truth ratios
    mine = report["documents"]["after"]["tofu_forget"]["tofu/truth_ratio"]
    theirs = report["documents"]["before"]["tofu_forget"]["tofu/truth_ratio"]
    assert after["tofu/forget_quality"] == pytest.approx(ks_2samp(mine, theirs).pvalue)
    forget_questions = json.loads((TOFU / "forget10_perturbed.json").read_text()) if (
        TOFU / "forget10_perturbed.json").read_text().lstrip().startswith("[") else [
        json.loads(line) for line in (TOFU / "forget10_perturbed.json").read_text().splitlines()
        if line.strip()]  # fmt: skip
    assert len(mine) == len(forget_questions)
    md = (out / "report.md").read_text()
    assert "TOFU forget quality (KS p-value)" in md and "KnowMem forget" in md
    assert "VerbMem forget (ROUGE-L F1 on text" in md and "PrivLeak" in md
