"""Relearning and quantization attacks: they work on a copy, the relearned slice is never scored,
relearning on a slice brings a forgotten forget set back, the recovered fraction by hand, and the
robustness benchmark's smoke run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import FORGET_TEXTS, TINY_CORPUS, make_batch, write_jsonl

from lightning_unlearn.attacks import (
    QuantizeAttack,
    RelearnAttack,
    document_target_counts,
    ends_interval,
    forget_log_ppl,
    forget_slice,
    format_recovered,
    raw_change,
    recovered_fraction,
    relearn,
    rescore,
    restrict_documents,
    slice_batches,
    text_batches,
)
from lightning_unlearn.data import UnlearningDataModule
from lightning_unlearn.evaluation import (
    MembershipInference,
    Memorisation,
    Perplexity,
    evaluate_model,
    roc_auc,
)
from lightning_unlearn.evaluation.statistics import mann_whitney_auc
from lightning_unlearn.workflow import UnlearningWorkflow


def _metrics():
    return [Perplexity(), MembershipInference(), Memorisation()]


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


@pytest.fixture
def datamodule(tiny_datamodule_kwargs):
    return UnlearningDataModule(**tiny_datamodule_kwargs, batch_size=2)


# ----------------------------------------------------------------------------------- the copy
def _snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
    }


def _assert_untouched(model, snapshot):
    state = model.state_dict()
    assert state.keys() == snapshot["state"].keys()
    for key, before in snapshot["state"].items():
        assert torch.equal(state[key], before), f"{key} changed"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == snapshot["requires_grad"]
    assert {n: m.training for n, m in model.named_modules()} == snapshot["training"]
    assert all(p.grad is None for p in model.parameters())


def test_attacks_leave_the_attacked_model_untouched(trained_tiny_model_dir, datamodule):
    model = _load(trained_tiny_model_dir)
    # mixed flags, so that a reset of any of them shows: eval mode with one block in train mode,
    # one frozen parameter
    model.eval()
    model.model.layers[0].train()
    model.model.norm.weight.requires_grad_(False)
    snapshot = _snapshot(model)
    attacks = [
        RelearnAttack(data="retain", steps=(1, 2), learning_rate=1e-2),
        RelearnAttack(data="forget_slice", steps=(0, 3), learning_rate=1e-2),
        RelearnAttack(data="general", steps=(1,), learning_rate=1e-2),
        QuantizeAttack(bits=(8, 4), group_size=16),
    ]
    changed = []
    for attack in attacks:
        copies = set()
        for name, attacked, _ in attack.variants(model, datamodule):
            assert attacked is not model
            assert all(
                a.data_ptr() != b.data_ptr()
                for a, b in zip(attacked.parameters(), model.parameters())
            )
            copies.add(id(attacked))
            moved = any(
                not torch.equal(a, b) for a, b in zip(attacked.parameters(), model.parameters())
            )
            changed.append((name, moved))
            _assert_untouched(model, snapshot)
        if isinstance(attack, RelearnAttack):
            assert len(copies) == 1  # one deep copy per attack, trained on between variants
    assert dict(changed) == {
        "relearn_retain_k1": True,
        "relearn_retain_k2": True,
        "relearn_forget_slice_k0": False,
        "relearn_forget_slice_k3": True,
        "relearn_general_k1": True,
        "quantize_8bit": True,
        "quantize_4bit": True,
    }


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """A tiny Llama with attention dropout: its training draws random numbers."""
    from lightning_unlearn.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-dropout"), attention_dropout=0.5)


def _relearned(model, batches, seed):
    for _, copy in relearn(model, batches, steps=(2,), learning_rate=1e-2, seed=seed):
        return {k: v.detach().clone() for k, v in copy.state_dict().items()}


def test_relearn_keeps_its_random_state_apart(dropout_model_dir, tiny_tokenizer):
    """With dropout in training: the caller's global random state is the same after relearning
    as before, and the attack's own seed (not the global state) decides the dropout masks."""
    model = _load(dropout_model_dir)
    assert model.config.attention_dropout == 0.5
    batches = [make_batch(tiny_tokenizer, FORGET_TEXTS)]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = _relearned(model, batches, seed=0)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(999)  # another global state: the same attack, the same weights
    again = _relearned(model, batches, seed=0)
    other = _relearned(model, batches, seed=1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)  # the dropout is live


def test_relearning_moves_a_bf16_model_as_much_as_its_fp32_copy(tiny_model_dir, tiny_tokenizer):
    """A bf16 checkpoint is relearned in float32 master weights: after the same steps at lr 1e-5
    its weights (compared in float32) moved like the fp32 model's, not a fraction of them."""
    fp32 = _load(tiny_model_dir)
    bf16 = _load(tiny_model_dir).to(torch.bfloat16)
    batches = [make_batch(tiny_tokenizer, FORGET_TEXTS)]
    moved = {}
    for name, model in (("fp32", fp32), ("bf16", bf16)):
        start = {k: v.float() for k, v in model.state_dict().items()}
        _, copy = next(relearn(model, batches, steps=(1,), learning_rate=1e-5))
        after = copy.state_dict()
        delta = torch.cat([(after[k].float() - start[k]).flatten() for k in start])
        moved[name] = delta
    changed = {name: float((d != 0).float().mean()) for name, d in moved.items()}
    # AdamW's first step moves nearly every weight by ~lr; trained in bf16 most moves round away
    assert changed["fp32"] > 0.5 and changed["bf16"] > 0.9 * changed["fp32"], changed
    ratio = moved["bf16"].abs().sum() / moved["fp32"].abs().sum()
    assert 0.9 < float(ratio) < 1.1
    assert next(bf16.parameters()).dtype == torch.bfloat16  # the attacked model stays as it was


def test_relearn_dtype_is_checked():
    with pytest.raises(ValueError, match="unknown dtype"):
        RelearnAttack(dtype="float8")


def test_relearn_checks_its_inputs(tiny_model_dir, tiny_tokenizer):
    model = _load(tiny_model_dir)
    batch = make_batch(tiny_tokenizer, FORGET_TEXTS)
    with pytest.raises(ValueError, match="non-negative"):
        next(relearn(model, [batch], steps=(-1,)))
    with pytest.raises(ValueError, match="steps is empty"):
        next(relearn(model, [batch], steps=()))
    with pytest.raises(ValueError, match="learning_rate"):
        next(relearn(model, [batch], learning_rate=0.0))
    with pytest.raises(ValueError, match="no batches"):
        next(relearn(model, [], steps=(1,)))
    with pytest.raises(ValueError, match="RelearnAttack.data"):
        RelearnAttack(data="forget")
    with pytest.raises(ValueError, match="bits"):
        QuantizeAttack(bits=(0,))


# ----------------------------------------------------------------------------------- the slice
def test_forget_slice_is_disjoint_deterministic_and_checked():
    docs = [5, 3, 3, 9, 0, 7, 1, 2, 8]  # repeats: one per window
    the_slice, rest = forget_slice(docs, fraction=0.25, seed=0)
    assert len(the_slice) == 2 and len(rest) == 6  # round(0.25 * 8)
    assert set(the_slice).isdisjoint(rest)
    assert set(the_slice) | set(rest) == set(docs)
    assert (the_slice, rest) == forget_slice(list(reversed(docs)), fraction=0.25, seed=0)
    assert len(forget_slice(range(4), fraction=0.01)[0]) == 1  # at least one document
    assert len(forget_slice(range(4), fraction=0.99)[1]) == 1  # at least one left to score
    with pytest.raises(ValueError, match="at least 2 forget documents"):
        forget_slice([4, 4])
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="fraction"):
            forget_slice(range(8), fraction=fraction)


def _sequences(batches):
    return sorted(
        tuple(row[mask.bool()].tolist())
        for batch in batches
        for row, mask in zip(batch["input_ids"], batch["attention_mask"])
    )


def test_the_scored_documents_never_include_the_slice(tiny_model_dir, datamodule):
    attack = RelearnAttack(data="forget_slice", steps=(0, 1), learning_rate=1e-3)
    forget = datamodule.eval_dataset("forget")
    the_slice, rest = attack.split(datamodule)
    assert set(the_slice).isdisjoint(rest) and set(the_slice) | set(rest) == set(
        forget["doc_index"]
    )
    # the batches hold exactly the slice's windows
    batches = slice_batches(datamodule, the_slice, batch_size=2)
    windows = [ids for ids, d in zip(forget["input_ids"], forget["doc_index"]) if d in the_slice]
    assert _sequences(batches) == sorted(tuple(w) for w in windows)
    assert all(set(b) == {"input_ids", "attention_mask", "labels"} for b in batches)
    # every variant excludes the slice, and what is scored is the rest
    model = _load(tiny_model_dir)
    scorer = UnlearningWorkflow(metrics=_metrics(), verbose=False)
    tokens = document_target_counts(datamodule)
    for _, attacked, excluded in attack.variants(model, datamodule):
        assert excluded == set(the_slice)
        measurement = scorer.measure_checkpoint(attacked, datamodule)
        scored = restrict_documents(measurement.documents, excluded)["forget"]["doc_index"]
        assert set(scored) == set(rest) and set(scored).isdisjoint(the_slice)
        assert rescore(measurement.documents, tokens, exclude=excluded)["forget/documents"] == len(
            rest
        )
    for other in (RelearnAttack(data="retain"), QuantizeAttack()):
        assert other.excluded(datamodule) == set()


def test_text_batches_need_the_split(datamodule, tiny_datamodule_kwargs):
    retain = text_batches(datamodule, "retain", batch_size=4)
    assert sum(len(b["input_ids"]) for b in retain) == len(datamodule.eval_dataset("retain"))
    kwargs = {k: v for k, v in tiny_datamodule_kwargs.items() if k != "general"}
    with pytest.raises(KeyError, match="no 'general' text"):
        text_batches(UnlearningDataModule(**kwargs), "general", batch_size=2)


# ----------------------------------------------------------------------------------- relearning
@pytest.fixture
def memorised_forget_data(trained_tiny_model_dir, tmp_path):
    """A data module whose forget set is exactly the texts the trained tiny model memorised."""
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "forget.jsonl", FORGET_TEXTS)
    for split in ("retain", "approximate", "general"):
        write_jsonl(corpus / f"{split}.jsonl", TINY_CORPUS[split])
    return UnlearningDataModule(
        str(trained_tiny_model_dir),
        forget=str(corpus / "forget.jsonl"),
        retain=str(corpus / "retain.jsonl"),
        approximate=str(corpus / "approximate.jsonl"),
        general=str(corpus / "general.jsonl"),
        max_length=64,
        batch_size=2,
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_relearning_on_the_slice_brings_the_rest_back(
    trained_tiny_model_dir, tiny_tokenizer, memorised_forget_data, seed
):
    data = memorised_forget_data
    scorer = UnlearningWorkflow(metrics=[Perplexity(), MembershipInference()], verbose=False)
    tokens = document_target_counts(data)
    attack = RelearnAttack(data="forget_slice", steps=(0, 8), learning_rate=3e-3, seed=seed)
    the_slice, rest = attack.split(data)

    def rest_nll(model, excluded=frozenset(the_slice)):
        measurement = scorer.measure_checkpoint(model, data)
        return rescore(measurement.documents, tokens, exclude=excluded)["forget/nll"]

    model = _load(trained_tiny_model_dir)
    memorised = rest_nll(model)
    # make it forget: five steps of gradient ascent on the memorised texts
    batch = make_batch(tiny_tokenizer, FORGET_TEXTS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        (-torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100
        )).backward()  # fmt: skip
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    scores = {}
    for name, attacked, excluded in attack.variants(model, data):
        assert excluded == set(the_slice)
        scores[name] = rest_nll(attacked)
        slice_only = set(tokens) - set(the_slice)  # score the slice itself: exclude the rest
        scores[name + "_slice"] = rest_nll(attacked, excluded=slice_only)
    forgotten, relearned = scores["relearn_forget_slice_k0"], scores["relearn_forget_slice_k8"]
    assert forgotten > memorised + 2.0  # gradient ascent did make it forget the rest
    assert relearned < forgotten - 1.0  # eight steps on the slice bring the rest back
    assert scores["relearn_forget_slice_k8_slice"] < scores["relearn_forget_slice_k0_slice"] - 2.0


# ----------------------------------------------------------------------------------- the numbers
def test_recovered_fraction_by_hand():
    # forget log-ppl: B (memorised) 2.0, R (never saw it) 3.0, U after the attack 2.5: half back
    assert recovered_fraction(2.5, 2.0, 3.0) == pytest.approx(0.5)
    assert recovered_fraction(2.5, 2.0, 3.0, ends_interval=(-1.2, -0.8)) == pytest.approx(0.5)
    assert recovered_fraction(2.5, 2.0, 3.0, ends_interval=(-1.2, 0.1)) is None  # n/a
    assert recovered_fraction(2.5, 2.0, 3.0, ends_interval=(0.0, 0.3)) is None  # 0 is inside
    assert recovered_fraction(2.5, 2.0, 3.0, ends_interval=(math.nan, 0.3)) is None
    assert recovered_fraction(2.5, 2.0, 2.0) is None  # no scale
    assert recovered_fraction(None, 2.0, 3.0) is None
    assert recovered_fraction(math.inf, 2.0, 3.0) is None
    # an AUC: B 0.8, R 0.5; U 0.6 -> 1/3 back; U 0.4 -> -1/3 (over-unlearned); U 0.9 -> 4/3
    assert recovered_fraction(0.6, 0.8, 0.5) == pytest.approx(1 / 3)
    assert recovered_fraction(0.4, 0.8, 0.5) == pytest.approx(-1 / 3)
    assert recovered_fraction(0.9, 0.8, 0.5, ends_interval=(0.1, 0.45)) == pytest.approx(4 / 3)
    assert raw_change(2.0, 2.5) == pytest.approx(0.5)
    assert math.isnan(raw_change(None, 2.5))
    assert forget_log_ppl({"forget/nll": 1.5, "forget/ppl": 99.0}) == 1.5
    assert forget_log_ppl({"forget/ppl": math.e**2}) == pytest.approx(2.0)
    assert forget_log_ppl({}) is None
    assert format_recovered(0.5, 2.0, 3.0) == "0.50 (B 2.00, R 3.00)"
    assert format_recovered(None, 2.4, None) == "n/a (B 2.40, R —)"


def _docs(forget_ppl, forget_loss, approximate_loss, exact=None):
    forget = {"doc_index": list(range(len(forget_ppl))), "ppl": forget_ppl, "mia/loss": forget_loss}
    if exact is not None:
        forget["memorisation/exact"] = exact
    approximate = {"doc_index": list(range(len(approximate_loss))), "mia/loss": approximate_loss}
    approximate["ppl"] = [1.0] * len(approximate_loss)
    return {"forget": forget, "approximate": approximate}


def test_rescore_by_hand():
    # two forget documents of 2 and 6 target tokens, log-ppl 1 and 3: split NLL (2*1 + 6*3) / 8
    docs = _docs([math.e, math.e**3], [-1.0, -3.0], [-2.0], exact=[1.0, 0.0])
    tokens = {0: 2, 1: 6}
    values = rescore(docs, tokens)
    assert values["forget/nll"] == pytest.approx(2.5)
    assert values["forget/ppl"] == pytest.approx(math.exp(2.5))
    assert values["mia/loss_auc"] == pytest.approx(0.5)  # -1 > -2 > -3: one pair of two
    assert values["memorisation/forget_exact"] == pytest.approx(0.5)
    assert values["forget/documents"] == 2
    rest = rescore(docs, tokens, exclude={1})
    assert rest["forget/nll"] == pytest.approx(1.0)
    assert rest["mia/loss_auc"] == pytest.approx(1.0)
    assert rest["memorisation/forget_exact"] == pytest.approx(1.0)
    assert rest["forget/documents"] == 1
    with pytest.raises(KeyError, match="target-token count"):
        rescore(docs, {0: 2})


def test_rescore_matches_the_measurement(tiny_model_dir, datamodule):
    model = _load(tiny_model_dir)
    measurement = UnlearningWorkflow(metrics=_metrics(), verbose=False).measure_checkpoint(
        model, datamodule
    )
    tokens = document_target_counts(datamodule)
    evaluator = evaluate_model(model, datamodule.eval_loaders(["forget"]), metrics=[])
    forget = evaluator.last_documents["forget"]
    assert tokens == {d: t.numel() for d, t in zip(forget.doc_index, forget.logprob)}
    values = rescore(measurement.documents, tokens)
    for key, value in values.items():
        if key in measurement.values:
            assert value == pytest.approx(measurement.values[key], rel=1e-9, abs=1e-12), key
    assert {"forget/nll", "mia/loss_auc", "memorisation/forget_exact"} <= set(values)


def test_ends_interval_by_hand():
    # B's log-ppl is 1 below R's on every document: every resample's difference is exactly -1
    b = _docs([math.e] * 3, [0.0, 0.1, 0.2], [-1.0, -0.9])
    r = _docs([math.e**2] * 3, [-2.0, -1.9, -1.8], [-1.0, -0.9])
    tokens = {0: 5, 1: 7, 2: 3}
    assert ends_interval(b, r, "forget/nll", tokens, n_resamples=50) == pytest.approx((-1.0, -1.0))
    # every B member scores above every non-member (AUC 1), every R member below (AUC 0)
    assert ends_interval(b, r, "mia/loss_auc", n_resamples=50) == pytest.approx((1.0, 1.0))
    # the same model at both ends: the interval is (0, 0), so the fraction is n/a
    same = ends_interval(b, b, "forget/nll", tokens, n_resamples=50)
    assert same == (0.0, 0.0)
    assert recovered_fraction(1.5, 1.0, 1.0, ends_interval=same) is None
    assert ends_interval(b, r, "forget/nll", tokens, exclude={0, 1}) == pytest.approx((-1, -1))
    with pytest.raises(ValueError, match="different"):
        ends_interval(b, _docs([1.0] * 2, [0.0] * 2, [0.0] * 2), "forget/nll", tokens)
    with pytest.raises(ValueError, match="no bootstrap"):
        ends_interval(b, r, "forget/acc", tokens)


def test_vectorised_auc_matches_roc_auc():
    generator = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (20, 7), generator=generator).double()  # ties on purpose
    neg = torch.randint(0, 5, (20, 9), generator=generator).double()
    rows = mann_whitney_auc(pos.numpy(), neg.numpy())
    for i in range(20):
        assert rows[i] == pytest.approx(roc_auc(pos[i], neg[i]))


# ----------------------------------------------------------------------------------- benchmark


# ----------------------------------------------------------------------------- through evaluate
def _data_config(tmp_path, corpus_dir):
    """The tiny corpus as an ``evaluate --config`` data file."""
    import yaml

    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": {
        "class_path": "lightning_unlearn.data.UnlearningDataModule", "init_args": {
            "forget": str(corpus_dir / "forget.jsonl"),
            "approximate": str(corpus_dir / "approximate.jsonl"),
            "retain": str(corpus_dir / "retain.jsonl"),
            "max_length": 64, "batch_size": 2, "cache_dir": str(tmp_path / "cache")}}}))  # fmt: skip
    return config


def test_without_retrain_an_attack_that_changes_nothing_reports_no_change(
    trained_tiny_model_dir, tiny_corpus_dir, tmp_path
):
    """No exact-retrain model: the report's change compares the attacked copy with the unlearned
    model on the same documents (the forget set less the relearned slice), so zero relearning
    steps change nothing, though the slice's documents score differently from the rest."""
    from lightning_unlearn.cli import main

    out = tmp_path / "out"
    args = ["evaluate", "--config", str(_data_config(tmp_path, tiny_corpus_dir)), "--model",
            str(trained_tiny_model_dir), "--attacks", "relearn", "--relearn_steps", "0",
            "--output_dir", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    section = report["attacks"]
    assert section["ends"] == ["unlearned"]
    sliced = section["variants"]["relearn_forget_slice_k0"]
    assert sliced["excluded"]
    for name in ("relearn_forget_slice_k0", "relearn_retain_k0"):
        for metric in ("forget/nll", "mia/loss_auc"):
            assert section["variants"][name]["change"][metric] == pytest.approx(0, abs=1e-6)
    # the slice matters: the whole forget set's value differs from the rest's
    whole = section["plain"]["unlearned"]["forget/nll"]
    assert abs(sliced["values"]["unlearned"]["forget/nll"] - whole) > 1e-3


def test_evaluate_runs_both_attacks_into_the_report(
    trained_tiny_model_dir, tiny_model_dir, tiny_corpus_dir, tiny_tokenizer, tmp_path, capsys
):
    """U: the memorised model after a few GA steps; B: the memorised model; R: the untouched
    model (it never saw the forget texts). Both attacks on all three, into report.json, its
    verdict and report.md; bad attack options are refused before anything runs."""
    from conftest import FORGET_TEXTS, make_batch

    from lightning_unlearn import GradientAscent
    from lightning_unlearn.cli import main
    from lightning_unlearn.testing import build_method, fit_on_batches

    module = build_method(GradientAscent, trained_tiny_model_dir, learning_rate=3e-3)
    fit_on_batches(module, make_batch(tiny_tokenizer, FORGET_TEXTS), steps=4)
    unlearned = module.export(tmp_path / "unlearned")
    config = _data_config(tmp_path, tiny_corpus_dir)
    args = ["evaluate", "--config", str(config), "--model", str(unlearned), "--compare",
            str(trained_tiny_model_dir), "--retrain_model", str(tiny_model_dir)]  # fmt: skip
    assert main([*args, "--attacks", "relearn,prune", "--output_dir", str(tmp_path / "x")]) == 2
    assert "unknown attack 'prune'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    out = tmp_path / "out"
    code = main([*args, "--attacks", "relearn,quantize", "--relearn_steps", "1,2",
                 "--relearn_lr", "3e-3", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    variants = report["attacks"]["variants"]
    assert set(variants) == {"relearn_retain_k1", "relearn_retain_k2", "relearn_forget_slice_k1",
                             "relearn_forget_slice_k2", "quantize_8bit", "quantize_4bit"}  # fmt: skip
    sliced = variants["relearn_forget_slice_k2"]
    assert sliced["excluded"] and not variants["quantize_4bit"]["excluded"]
    for row in variants.values():
        assert set(row["values"]) == {"unlearned", "before", "retrain"}
        fraction = row["recovered"]["forget/nll"]
        assert fraction is None or math.isfinite(fraction)
        if fraction is not None:  # the formula, from the values it shows
            u, b, r = (row["values"][e]["forget/nll"] for e in ("unlearned", "before", "retrain"))
            assert fraction == pytest.approx((u - r) / (b - r))
    assert any(line.startswith("attack quantize_8bit: ") for line in report["verdict"])
    assert "## Does it stay forgotten? Attacks" in (out / "report.md").read_text()
