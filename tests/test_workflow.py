"""The unlearning workflow: metrics from outside the library reach every output of a tiny ``fit``,
and ``evaluate`` reproduces ``fit``'s report."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY_CORPUS
from test_cli import write_config

from lightning_unlearn.cli import main

TOY = [
    {"class_path": "toy_metrics.TokenCount"},
    {"class_path": "toy_metrics.FirstTokenEcho"},
    {"class_path": "toy_metrics.LogprobGap", "init_args": {"model_name_or_path": None}},
    {"class_path": "lightning_unlearn.evaluation.Perplexity"},
]


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tiny_corpus_dir, tmp_path_factory):
    """One tiny fit through the CLI with the three toy metrics (the reference of the second-model
    one is the untouched tiny model), and its printed output."""
    tmp = tmp_path_factory.mktemp("workflow")
    metrics = [dict(m) for m in TOY]
    metrics[2] = {**metrics[2], "init_args": {"model_name_or_path": str(tiny_model_dir)}}
    cfg = write_config(tmp / "config.yaml", tiny_model_dir, tiny_corpus_dir, tmp / "cache")
    config = yaml.safe_load(cfg.read_text())
    config["metrics"] = metrics
    config["trainer"]["max_steps"] = 3
    cfg.write_text(yaml.safe_dump(config))
    out = tmp / "run"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["fit", "--config", str(cfg), "--output_dir", str(out),
                     "--stop_at_target", "false"])  # fmt: skip
    assert code == 0
    return {"out": out, "printed": printed.getvalue(), "config": config, "tmp": tmp}


def test_toy_metrics_reach_report_json_markdown_and_the_printed_table(fitted):
    report = json.loads((fitted["out"] / "report.json").read_text())
    for column in ("before", "after"):
        values = report[column]
        assert values["toytokens/forget_tokens"] > 0
        assert 0.0 <= values["toygen/forget_echo"] <= 1.0
        assert "toyref/forget_gap" in values and "forget/ppl" in values
        docs = report["documents"][column]["forget"]
        n = len(docs["doc_index"])
        assert n == len(TINY_CORPUS["forget"])  # one entry per document
        for name in ("toytokens/tokens", "toytokens/best", "toygen/echo", "toyref/gap", "ppl"):
            assert len(docs[name]) == n, name
        assert sum(docs["toytokens/tokens"]) == values["toytokens/forget_tokens"]
    # before training the evaluated model is the second model: no gap; after three steps, a gap
    assert report["before"]["toyref/forget_gap"] == pytest.approx(0.0, abs=1e-6)
    assert report["after"]["toyref/forget_gap"] != pytest.approx(0.0, abs=1e-4)
    # no MIA: the metrics option replaced the default set
    assert not any(k.startswith("mia/") for k in report["after"])
    classes = [m["class"] for m in report["metrics"]]
    assert classes[:3] == ["toy_metrics.TokenCount", "toy_metrics.FirstTokenEcho",
                           "toy_metrics.LogprobGap"]  # fmt: skip
    md = (fitted["out"] / "report.md").read_text()
    printed = fitted["printed"]
    for row in ("toytokens/forget_tokens", "toygen/forget_echo", "toyref/forget_gap"):
        assert f"| {row} |" in md, row
        assert row in printed, row
    # every per-document value in documents.csv; report.md's table keeps eight columns at most
    header = (fitted["out"] / "documents.csv").read_text().splitlines()[0].split(",")
    for column in ("toytokens/tokens (after)", "toygen/echo (after)", "toyref/gap (after)"):
        assert column in header, column
        assert column not in md, column
    table = md.split("### forget:")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| document | ppl before | ppl after | after / unseen median |")
    assert all(row.count("|") - 1 <= 8 for row in table)


def test_evaluate_reproduces_fits_report(fitted, tiny_model_dir):
    out, tmp = fitted["out"], fitted["tmp"]
    data_config = tmp / "data.yaml"
    data_config.write_text(yaml.safe_dump({"data": fitted["config"]["data"]}))
    code = main(["evaluate", "--config", str(data_config), "--model", str(out / "model"),
                 "--compare", str(tiny_model_dir), "--output_dir", str(tmp / "evaluated")])  # fmt: skip
    assert code == 0
    fit_report = json.loads((out / "report.json").read_text())
    evaluated = json.loads((tmp / "evaluated" / "report.json").read_text())
    for column in ("before", "after"):
        for split in ("forget", "approximate", "retain"):
            key = f"{split}/ppl"
            assert evaluated[column][key] == pytest.approx(fit_report[column][key], rel=1e-3)
    assert evaluated["target_ppl"] == pytest.approx(fit_report["target_ppl"], rel=1e-3)
    # the default metrics: membership inference too
    assert "mia/loss_auc" in evaluated["after"]


def test_evaluate_refuses_bad_input_naming_it(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    code = main(["evaluate", "--model", str(tiny_model_dir), "--data.forget", "/nonexistent.jsonl",
                 "--output_dir", str(out)])  # fmt: skip
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "report.json").read_text() == "{}"
    code = main(["evaluate", "--model", str(tiny_model_dir), "--data.forget", "/nonexistent.jsonl",
                 "--output_dir", str(tmp_path / "new")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "/nonexistent.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ the before cache
def _key(workflow, model_dir, corpus_dir, cache):
    from lightning_unlearn.data import UnlearningDataModule

    data = UnlearningDataModule(
        tokenizer=str(model_dir), forget=str(corpus_dir / "forget.jsonl"),
        approximate=str(corpus_dir / "approximate.jsonl"), max_length=64, cache_dir=str(cache),
    )  # fmt: skip
    data.setup("validate")
    return workflow.cache.path(str(model_dir), data, workflow.metrics, kind="before")


def test_the_before_cache_keys_on_content(tiny_model_dir, tiny_corpus_dir, tmp_path):
    """The same bytes give the same key whatever the file names and dates; other weights, a data
    file edited in place or other metrics give another."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from lightning_unlearn.evaluation import MembershipInference, Perplexity
    from lightning_unlearn.workflow import UnlearningWorkflow

    workflow = UnlearningWorkflow(metrics=[Perplexity()], score_cache=tmp_path / "scores")
    model, corpus = tmp_path / "model", tmp_path / "corpus"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_corpus_dir, corpus)
    key = _key(workflow, model, corpus, tmp_path / "c1")
    assert key is not None and key.parent == tmp_path / "scores"
    # identical inputs elsewhere, with new dates: the same key
    shutil.copytree(model, tmp_path / "model2")
    shutil.copytree(corpus, tmp_path / "corpus2")
    for f in (tmp_path / "model2").iterdir():
        os.utime(f, ns=(1, 1))
    assert _key(workflow, tmp_path / "model2", tmp_path / "corpus2", tmp_path / "c2") == key
    # one weight changed, same size and name
    weights = next((tmp_path / "model2").glob("*.safetensors"))
    state = load_file(weights)
    name = sorted(state)[0]
    state[name] = state[name] + 1e-3
    save_file(state, weights, metadata={"format": "pt"})
    assert _key(workflow, tmp_path / "model2", corpus, tmp_path / "c3") != key
    # a data file's content edited in place
    forget = tmp_path / "corpus2" / "forget.jsonl"
    forget.write_text(forget.read_text().replace("a", "o", 1))
    assert _key(workflow, model, tmp_path / "corpus2", tmp_path / "c4") != key
    # other metrics
    other = UnlearningWorkflow(metrics=[Perplexity(), MembershipInference()],
                               score_cache=tmp_path / "scores")  # fmt: skip
    assert _key(other, model, corpus, tmp_path / "c5") != key
    # a hub id (no local bytes) is not cached
    assert workflow.cache.path("org/some-model", None, workflow.metrics, kind="before") is None


def test_a_second_identical_fit_reuses_the_before_measurement(
    tiny_model_dir, tiny_corpus_dir, tmp_path
):
    cfg = write_config(
        tmp_path / "config.yaml", tiny_model_dir, tiny_corpus_dir, tmp_path / "cache"
    )
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["max_steps"] = 2
    cfg.write_text(yaml.safe_dump(config))
    reports = []
    for run in ("first", "second"):
        out = tmp_path / run
        assert main(["fit", "--config", str(cfg), "--output_dir", str(out),
                     "--stop_at_target", "false"]) == 0  # fmt: skip
        reports.append(json.loads((out / "report.json").read_text()))
    first, second = reports
    assert first["before_reused"] is None
    assert second["before_reused"].startswith(str(tmp_path / "scores"))
    assert second["before"] == first["before"]
    assert second["phase_seconds"]["before"] < first["phase_seconds"]["before"]
    assert "before: reused from" in (tmp_path / "second" / "report.md").read_text()


def test_metrics_without_perplexity_name_the_missing_metric(
    tiny_model_dir, tiny_corpus_dir, tmp_path, capsys
):
    """The target is the approximate split's perplexity: metrics that leave Perplexity out are
    refused naming it (not 'approximate split is empty'), nothing written."""
    cfg = write_config(
        tmp_path / "config.yaml", tiny_model_dir, tiny_corpus_dir, tmp_path / "cache"
    )
    config = yaml.safe_load(cfg.read_text())
    config["metrics"] = [{"class_path": "toy_metrics.TokenCount"}]
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'approximate/ppl', which no configured metric computes (['TokenCount'])" in err
    assert "add lightning_unlearn.evaluation.Perplexity" in err
    assert not (out / "report.json").exists()


def test_a_method_from_outside_the_package_runs_by_its_dotted_path(
    tiny_model_dir, tiny_corpus_dir, tmp_path, capsys
):
    """tests/toy_methods.py holds a class and nothing else: fit, the planner and the quality
    benchmark's method selection take it by ``toy_methods.HalfGradientAscent``."""
    import importlib.util
    import sys
    from pathlib import Path

    from lightning_unlearn.planner import method_needs

    path = "toy_methods.HalfGradientAscent"
    cfg = write_config(
        tmp_path / "config.yaml", tiny_model_dir, tiny_corpus_dir, tmp_path / "cache"
    )
    config = yaml.safe_load(cfg.read_text())
    config["model"]["class_path"] = path
    config["trainer"]["max_steps"] = 2
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--output_dir", str(out),
                 "--stop_at_target", "false"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "HalfGradientAscent" and report["steps"] == 2
    needs = method_needs(path)
    assert (needs.name, needs.uses_retain, needs.reference) == ("HalfGradientAscent", True, False)
    assert main(["plan", "--model", str(tiny_model_dir), "--method", path, "--gpus", "1",
                 "--strategy", "deepspeed_zero2"]) == 0  # fmt: skip
    assert "HalfGradientAscent" in capsys.readouterr().out
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        spec = importlib.util.spec_from_file_location("quality_outside", benchmarks / "quality.py")
        quality = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quality)
    finally:
        sys.path.pop(0)
    rows = quality.method_rows(["GA", path])
    assert rows[0][1] == "GradientAscent" and rows[1] == (path, path, "retain", {})
    with pytest.raises(SystemExit, match="unknown --method 'toy_methods.Nothing'"):
        quality.method_rows(["toy_methods.Nothing"])


# ------------------------------------------------------------------ the data module's contract
def test_the_data_module_satisfies_the_workflows_protocol(tiny_datamodule_kwargs):
    """What the workflow reads of a data module is the typed ``UnlearningData`` protocol, and
    ``UnlearningDataModule`` has every member of it (structurally and at run time)."""
    import inspect
    import typing

    from lightning_unlearn.data import UnlearningDataModule
    from lightning_unlearn.data.protocol import UnlearningData
    from lightning_unlearn.workflow import UnlearningWorkflow

    members = set(UnlearningData.__annotations__) | {
        name for name, _ in inspect.getmembers(UnlearningData) if not name.startswith("_")
    }
    assert {"eval_loaders", "eval_texts", "eval_dataset", "tokenizer", "check_splits"} <= members
    data = UnlearningDataModule(**tiny_datamodule_kwargs)
    missing = [name for name in sorted(members) if not hasattr(data, name)]
    assert not missing, missing
    assert isinstance(data, UnlearningData)
    assert not isinstance(object(), UnlearningData)
    # the workflow's signatures name the protocol, not Any
    hints = typing.get_type_hints(UnlearningWorkflow.measure_checkpoint)
    assert hints["datamodule"] is UnlearningData


def test_the_score_cache_fingerprints_a_data_module_once(
    tiny_model_dir, tiny_datamodule_kwargs, tmp_path, monkeypatch
):
    """Looking up several measurements of one data module hashes its splits once."""
    from lightning_unlearn import score_cache
    from lightning_unlearn.data import UnlearningDataModule
    from lightning_unlearn.evaluation import Perplexity

    calls = []
    real = score_cache.splits_fingerprint
    monkeypatch.setattr(score_cache, "splits_fingerprint", lambda dm: calls.append(1) or real(dm))
    cache = score_cache.MeasurementCache(tmp_path / "scores")
    data = UnlearningDataModule(**tiny_datamodule_kwargs)
    keys = {cache.path(str(tiny_model_dir), data, [Perplexity()], g) for g in (True, False, True)}
    assert len(keys) == 2 and len(calls) == 1
    data.eval_subset = 2  # what is scored changed: hashed again, another key
    assert cache.path(str(tiny_model_dir), data, [Perplexity()]) not in keys and len(calls) == 2


def test_the_workflow_pickles(tiny_datamodule_kwargs, tiny_model_dir, tmp_path):
    """A spawned process gets the workflow pickled: its score cache's memo (weak references to
    data modules) is left behind and rebuilt."""
    import pickle

    from lightning_unlearn.data import UnlearningDataModule
    from lightning_unlearn.evaluation import Perplexity
    from lightning_unlearn.workflow import UnlearningWorkflow

    workflow = UnlearningWorkflow(metrics=[Perplexity()], score_cache=tmp_path / "scores")
    data = UnlearningDataModule(**tiny_datamodule_kwargs)
    key = workflow.cache.path(str(tiny_model_dir), data, workflow.metrics)
    copy = pickle.loads(pickle.dumps(workflow))
    assert copy.score_cache == tmp_path / "scores"
    assert copy.cache.path(str(tiny_model_dir), data, copy.metrics) == key
