"""The command line: an end-to-end fit with crash + resume, the bad-input catalogue (exit code 2,
a message naming the input and the fix, no traceback, no output overwritten), usage errors and
``--help`` of a method."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from lightning_unlearn.cli import main


def write_config(
    path,
    model_dir,
    corpus_dir,
    cache_dir,
    *,
    model=None,
    data=None,
    trainer=None,
    method="GradientAscentDescent",
):
    config = {
        "seed_everything": 3,
        "model": {
            "class_path": f"lightning_unlearn.{method}",
            "init_args": {
                "model_name_or_path": str(model_dir),
                "learning_rate": 1e-2,
                "warmup_ratio": 0.0,
                **(model or {}),
            },
        },
        "data": {
            "class_path": "lightning_unlearn.data.UnlearningDataModule",
            "init_args": {
                "forget": str(corpus_dir / "forget.jsonl"),
                "retain": str(corpus_dir / "retain.jsonl"),
                "approximate": str(corpus_dir / "approximate.jsonl"),
                "max_length": 64,
                "batch_size": 2,
                "eval_batch_size": 8,
                "cache_dir": str(cache_dir),
                **(data or {}),
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 6,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **(trainer or {}),
        },
    }
    Path(path).write_text(yaml.safe_dump(config))
    return Path(path)


@pytest.fixture
def config(tiny_model_dir, tiny_corpus_dir, tmp_path):
    def make(name="config.yaml", **kwargs):
        return write_config(
            tmp_path / name, tiny_model_dir, tiny_corpus_dir, tmp_path / "cache", **kwargs
        )

    return make


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_fit_crashes_then_resumes_with_ckpt_path_last_and_writes_report_and_model(
    config, tmp_path, capsys
):
    args = ["--stop_at_target", "false", "--checkpoint_every_n_steps", "2"]
    out = tmp_path / "run"
    # the run crashes at step 3, after the step-2 checkpoint
    fault = config(
        "fault.yaml",
        trainer={
            "callbacks": [
                {
                    "class_path": "lightning_unlearn.testing.FaultInjection",
                    "init_args": {"at_step": 3},
                }
            ]
        },
    )
    with pytest.raises(RuntimeError, match="injected fault at step 3"):
        main(["fit", "--config", str(fault), *args, "--output_dir", str(out)])
    assert not (out / "report.json").exists() and not (out / "model").exists()
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2
    assert state["UnlearningDataModule"] == {"epoch": 0, "batches_done": 2}

    cfg = config()
    # a new run into the crashed run's directory is refused; resuming it is allowed
    assert main(["fit", "--config", str(cfg), *args, "--output_dir", str(out)]) == 2
    assert (
        main(["fit", "--config", str(cfg), *args, "--output_dir", str(out), "--ckpt_path", "last"])
        == 0
    )
    assert "report:" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "GradientAscentDescent" and report["steps"] == 6
    assert report["after"]["forget/ppl"] > report["before"]["forget/ppl"]
    assert report["paths"]["output_dir"] == str(out.resolve())
    assert report["paths"]["ckpt_path"] == "last"
    assert Path(report["paths"]["data.forget"]).is_absolute()
    model = AutoModelForCausalLM.from_pretrained(out / "model")  # a plain HF checkpoint
    assert model.config.vocab_size == 384 and not list((out / "model").glob("*.bin"))
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left

    # resuming a finished run would replace its results: refused
    assert (
        main(["fit", "--config", str(cfg), *args, "--output_dir", str(out), "--ckpt_path", "last"])
        == 2
    )
    assert "holds a finished run (report.json)" in capsys.readouterr().err


# ------------------------------------------------------------------ bad inputs
def _corpus_variant(tmp_path, tiny_corpus_dir, name, content):
    folder = tmp_path / "corpus"
    if not folder.exists():
        shutil.copytree(tiny_corpus_dir, folder)
    (folder / name).write_text(content)
    return folder


def _model_variant(tmp_path, tiny_model_dir, name, **config_changes):
    folder = tmp_path / name
    shutil.copytree(tiny_model_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config_changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


BAD_INPUTS = {
    "missing data file": (
        lambda t, m, c: {"data": {"forget": str(t / "nowhere.jsonl")}},
        ["forget set", "nowhere.jsonl", "does not exist", "pass an existing file"],
    ),
    "empty data file": (
        lambda t, m, c: {
            "data": {"forget": str(_corpus_variant(t, c, "empty.jsonl", "") / "empty.jsonl")}
        },
        ["forget set", "empty.jsonl", "0 documents", "check the file"],
    ),
    "corrupt data file": (
        lambda t, m, c: {
            "data": {
                "retain": str(
                    _corpus_variant(t, c, "bad.jsonl", '{"text": "ok"}\n{"text": \n') / "bad.jsonl"
                )
            }
        },
        ["bad.jsonl", "line 2 is not valid JSON"],
    ),
    "wrong column": (
        lambda t, m, c: {
            "data": {"forget": {"path": str(c / "forget.jsonl"), "text_column": "body"}}
        },
        ["forget.jsonl", "no column 'body'", "['text']", "Set text_column"],
    ),
    "batch above the memory budget": (
        lambda t, m, c: {"data": {"batch_size": 8}, "args": ["--max_batch_tokens", "512"]},
        [
            "(batch_size 8 + 8 retain) x max_length 64",
            "= 1,024 tokens",
            "max_batch_tokens=512",
            "accumulate_grad_batches",
        ],
    ),
    "tokenizer and model vocab disagree": (
        lambda t, m, c: {
            "model": {
                "model_name_or_path": str(_model_variant(t, m, "small-vocab", vocab_size=300))
            }
        },
        ["tokenizer", "384 tokens", "vocabulary of 300", "Use the model's own tokenizer"],
    ),
    "reference model of another architecture": (
        lambda t, m, c: {
            "method": "GradientAscentKL",
            "model": {
                "reference_model_name_or_path": str(_model_variant(t, m, "wide", hidden_size=48))
            },
        },
        ["reference model", "wide", "hidden_size: 32 vs 48", "same family and size"],
    ),
    "max_length above the context": (
        lambda t, m, c: {"data": {"max_length": 1024}},
        ["max_length 1024", "max_position_embeddings=512", "data.max_length <= 512"],
    ),
    "learning rate <= 0": (
        lambda t, m, c: {"model": {"learning_rate": 0.0}},
        ["learning_rate must be > 0"],
    ),
    "negative weight": (
        lambda t, m, c: {"model": {"retain_weight": -0.5}},
        ["retain_weight must be >= 0"],
    ),
    "unknown strategy preset": (
        lambda t, m, c: {"args": ["--trainer.strategy", "deepspeed_zero9"]},
        [
            "unknown strategy 'deepspeed_zero9'",
            "deepspeed_zero3",
            "`lightning-unlearn configs` lists them",
            "lightning_unlearn/configs/trainer/<name>.yaml",
            "deepspeed_stage_3",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_it_and_overwrites_nothing(
    case, tiny_model_dir, tiny_corpus_dir, tmp_path, capsys
):
    make, expected = BAD_INPUTS[case]
    spec = make(tmp_path, tiny_model_dir, tiny_corpus_dir)
    cfg = write_config(
        tmp_path / "config.yaml",
        tiny_model_dir,
        tiny_corpus_dir,
        tmp_path / "cache",
        model=spec.get("model"),
        data=spec.get("data"),
        method=spec.get("method", "GradientAscentDescent"),
    )
    # a previous run's output, which --overwrite would replace only after a successful run
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "report.json").write_text('{"previous": true}')
    (out / "model" / "model.safetensors").write_bytes(b"previous")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = main(
        [
            "fit",
            "--config",
            str(cfg),
            "--output_dir",
            str(out),
            "--overwrite",
            "true",
            *spec.get("args", []),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    for words in expected:
        assert words in err, (words, err[-2000:])
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_existing_output_dir_is_refused_without_overwrite(config, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    assert main(["fit", "--config", str(config()), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"output directory '{out}' already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["report.json"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bogus_option", "1"], "unrecognized arguments: --bogus_option"),
        (
            ["--config", "/nonexistent/config.yaml"],
            "File does not exist: '/nonexistent/config.yaml'",
        ),
        (
            ["--model.class_path", "lightning_unlearn.NoSuchMethod"],
            "has no attribute 'NoSuchMethod'",
        ),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, words, config, capsys):
    code = main(["fit", "--config", str(config()), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and "Traceback" not in err


def test_method_help_shows_its_documented_hyper_parameters(capsys):
    assert main(["fit", "--model.help", "lightning_unlearn.GradientAscentDescent"]) == 0
    out = capsys.readouterr().out
    assert "--model.learning_rate" in out
    assert "AdamW learning rate (paper: 2e-5 for full fine-" in " ".join(out.split())
    assert "max_forget_nll" in out and "reference_model_name_or_path" in out


@pytest.mark.slow
def test_subprocess_bad_input_exit_code_and_no_traceback(config, tmp_path):
    cfg = config(data={"forget": str(tmp_path / "missing.jsonl")})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIGHTNING_UNLEARN_DEBUG": ""}
    env.pop("LIGHTNING_UNLEARN_DEBUG")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_unlearn",
            "fit",
            "--config",
            str(cfg),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "missing.jsonl' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_hyper_parameter_is_one_line_naming_it(config, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["fit", "--config", str(config()), "--model.learning_rate", "-1",
                 "--output_dir", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: learning_rate must be > 0, got -1"], err[-2000:]
    assert "Union" not in err and "Namespace(" not in err and "Traceback" not in err
    assert "litlogger" not in err and "💡" not in err  # no advertisement either
    assert not out.exists()


@pytest.mark.parametrize(
    ("method", "refused"), [("SimNPO", True), ("NegativePreferenceOptimization", False)]
)
def test_token_budget_counts_the_retain_window_of_the_configured_retain_term(
    method, refused, config, tmp_path, capsys
):
    """SimNPO's paper default is an NLL retain term: its step holds a retain window too (2 x 64
    x 2 tokens); NPO's default has none (2 x 64)."""
    out = tmp_path / "out"
    args = ["fit", "--config", str(config(method=method)), "--max_batch_tokens", "200",
            "--output_dir", str(out), "--trainer.max_steps", "1", "--stop_at_target", "false",
            "--export", "false"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    if refused:
        assert code == 2
        assert "(batch_size 2 + 2 retain) x max_length 64 = 256 tokens" in err
    else:
        assert code == 0, err[-2000:]


def test_fit_with_the_default_logger(config, tmp_path):
    """Lightning's logger merges the method's and the data module's hyper-parameters and refuses
    keys with different values: the tokenizer (model path in the data, unset in the method) must
    not be one."""
    out = tmp_path / "out"
    cfg = config(trainer={"logger": True, "max_steps": 1})
    assert main(["fit", "--config", str(cfg), "--output_dir", str(out),
                 "--stop_at_target", "false", "--export", "false"]) == 0  # fmt: skip
    assert (out / "report.json").exists() and list(out.rglob("metrics.csv"))
