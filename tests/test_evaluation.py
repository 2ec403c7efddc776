"""Evaluation: membership-inference scores, AUC, the evaluator, the approximate-retrain stop,
the report, verbatim memorisation, and evaluate_splits against trainer.validate."""

from __future__ import annotations

import json
import math
import zlib
from types import SimpleNamespace

import lightning as Lg
import pytest
import torch
from conftest import FORGET_TEXTS, RETAIN_TEXTS, make_batch
from torch import nn

from lightning_unlearn.evaluation import (
    ApproximateRetrainStopping,
    EmptyApproximateSplitError,
    UnlearningEvaluator,
    build_report,
    evaluate_splits,
    exact_match_length,
    format_table,
    lcs_length,
    loss_score,
    mia_scores,
    min_k_plus_plus_score,
    min_k_score,
    roc_auc,
    rouge_l_f1,
    tpr_at_fpr,
    verbatim_memorisation,
    write_report,
    zlib_score,
)
from lightning_unlearn.evaluation.memorisation import greedy_continuation
from lightning_unlearn.losses import token_statistics

# two documents: five target tokens, and two tokens then padding
LOGPROB = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0], [-0.5, -1.5, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
MU = torch.tensor([[-2.0, -2.0, -2.0, -2.0, -2.0], [-1.0, -1.0, 0.0, 0.0, 0.0]])
SIGMA = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0], [0.5, 0.25, 0.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------ MIA scores
def test_loss_and_zlib_scores_by_hand():
    assert loss_score(LOGPROB, MASK).tolist() == pytest.approx([-3.0, -1.0])
    # -mean NLL / zlib bytes
    assert zlib_score(LOGPROB, MASK, torch.tensor([10, 4])).tolist() == pytest.approx([-0.3, -0.25])
    with pytest.raises(ValueError, match="zlib_len must be > 0"):
        zlib_score(LOGPROB, MASK, torch.tensor([10, 0]))


def test_min_k_by_hand():
    # k=0.4: document 0 keeps floor(0.4*5)=2 tokens (-5, -4); document 1 keeps max(1, floor(0.8))=1
    assert min_k_score(LOGPROB, MASK, k=0.4).tolist() == pytest.approx([-4.5, -1.5])
    # k=0.2 (the paper's default): the single lowest token of each
    assert min_k_score(LOGPROB, MASK).tolist() == pytest.approx([-5.0, -1.5])
    assert min_k_score(LOGPROB, MASK, k=1.0).tolist() == pytest.approx([-3.0, -1.0])
    with pytest.raises(ValueError, match="fraction k"):
        min_k_score(LOGPROB, MASK, k=0.0)


def test_min_k_plus_plus_by_hand():
    # standardised: doc 0 -> [1, 0, -1, -2, -1.5]; doc 1 -> [1, -2]
    got = min_k_plus_plus_score(LOGPROB, MU, SIGMA, MASK, k=0.4)
    assert got.tolist() == pytest.approx([-1.75, -2.0])
    # a position with zero spread has logprob == mu and scores 0, not NaN
    flat = min_k_plus_plus_score(MU[:1], MU[:1], torch.zeros(1, 5), MASK[:1], k=1.0)
    assert flat.tolist() == [0.0]


def test_mia_scores_from_token_statistics_and_empty_document():
    logits = torch.randn(2, 6, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, 2, 3, 4, 5, 6], [3, 3, -100, -100, -100, -100]])
    stats = token_statistics(logits, labels)
    scores = mia_scores(stats, torch.tensor([7, 3]), k=0.2)
    logp = torch.log_softmax(logits, -1)
    token_lp = logp[0, :-1].gather(-1, labels[0, 1:, None]).squeeze(-1)
    assert scores["loss"][0].item() == pytest.approx(token_lp.mean().item(), rel=1e-5)
    assert scores["zlib"][0].item() == pytest.approx(token_lp.mean().item() / 7, rel=1e-5)
    assert scores["min_k"][0].item() == pytest.approx(token_lp.min().item(), rel=1e-5)
    p = logp[0, :-1].exp()
    mu = (p * logp[0, :-1]).sum(-1)
    sigma = ((p * logp[0, :-1] ** 2).sum(-1) - mu**2).sqrt()
    assert scores["min_k_plus_plus"][0].item() == pytest.approx(
        ((token_lp - mu) / sigma).min().item(), rel=1e-4
    )
    # a document with no target token scores NaN
    empty = {k: v[:, :0] if v.dim() == 2 else v for k, v in stats.items()}
    assert math.isnan(mia_scores(empty, None)["loss"][0].item())
    assert math.isfinite(scores["loss"][1].item())
    assert math.isnan(mia_scores(stats)["zlib"][0])  # no zlib_len: NaN, not an error


# ------------------------------------------------------------------------------ AUC / TPR
def test_auc_separated_identical_and_ties():
    assert roc_auc(torch.tensor([3.0, 4, 5]), torch.tensor([0.0, 1, 2])) == 1.0
    assert roc_auc(torch.tensor([0.0, 1, 2]), torch.tensor([3.0, 4, 5])) == 0.0
    same = torch.linspace(-3, 1, 50)
    assert roc_auc(same, same.clone()) == pytest.approx(0.5)
    assert roc_auc(torch.ones(2), torch.ones(3)) == pytest.approx(0.5)
    # pairs: (2,2)=1/2, (2,1)=1, (3,2)=1, (3,1)=1 -> 3.5/4
    assert roc_auc(torch.tensor([2.0, 3]), torch.tensor([2.0, 1])) == pytest.approx(0.875)
    assert math.isnan(roc_auc(torch.tensor([1.0]), torch.tensor([])))
    # NaN scores (e.g. zlib without zlib_len) are dropped
    assert roc_auc(torch.tensor([2.0, math.nan]), torch.tensor([1.0])) == 1.0


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(1)
    pos = torch.randint(0, 6, (40,), generator=g).double()
    neg = torch.randint(0, 5, (30,), generator=g).double()
    expected = roc_auc_score([1] * 40 + [0] * 30, torch.cat([pos, neg]).numpy())
    assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_tpr_at_5_percent_fpr():
    neg = torch.arange(20.0)
    # threshold 18.5 flags one non-member of 20 (5%) and two of four members
    assert tpr_at_fpr(torch.tensor([18.5, 19.0, 10.0, 5.0]), neg, 0.05) == pytest.approx(0.5)
    assert tpr_at_fpr(torch.tensor([30.0, 40.0]), neg) == 1.0
    same = torch.arange(100.0)
    assert tpr_at_fpr(same, same.clone()) == pytest.approx(0.05)
    # all tied: any threshold that flags a member flags every non-member
    assert tpr_at_fpr(torch.ones(10), torch.ones(10)) == 0.0


# ------------------------------------------------------------------------------ the evaluator
def _stats(logprob, mask=None):
    logprob = torch.as_tensor(logprob, dtype=torch.float32)
    mask = torch.ones_like(logprob, dtype=torch.bool) if mask is None else mask
    return {
        "logprob": logprob * mask,
        "mu": torch.full_like(logprob, -1.0) * mask,
        "sigma": torch.ones_like(logprob) * mask,
        "correct": (logprob > -0.7) & mask,
        "mask": mask,
    }


def test_evaluator_keys_values_and_separated_mia():
    ev = UnlearningEvaluator()
    ev.update("forget", _stats([[-0.5, -0.5], [-0.8, -0.2]]), {"zlib_len": torch.tensor([5, 5])})
    ev.update(
        "approximate", _stats([[-2.0, -3.0], [-2.5, -2.5]]), {"zlib_len": torch.tensor([5, 5])}
    )
    out = {k: float(v) for k, v in ev.compute().items()}
    assert out["forget/ppl"] == pytest.approx(math.exp(0.5))
    assert out["forget/nll"] == pytest.approx(0.5)
    assert out["forget/acc"] == pytest.approx(0.75)
    assert out["approximate/ppl"] == pytest.approx(math.exp(2.5))
    for score in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        assert out[f"mia/{score}_auc"] == 1.0
        assert out[f"mia/{score}_tpr_at_5_fpr"] == 1.0
    assert not any(k.startswith(("retain/", "general/")) for k in out)  # never updated: absent
    ev.reset()
    ev.update("forget", _stats([[-1.0]]))
    out = ev.compute()
    # no approximate: no MIA or PrivLeak keys; memorisation of the forget split
    assert set(out) == {"forget/ppl", "forget/acc", "forget/nll", "memorisation/forget_exact",
                        "memorisation/forget_extraction"}  # fmt: skip
    with pytest.raises(KeyError, match="unknown evaluation split 'dev'"):
        ev.update("dev", _stats([[-1.0]]))


def test_evaluator_identical_splits_give_chance_auc_and_nan_zlib_without_zlib_len():
    ev = UnlearningEvaluator()
    rows = torch.linspace(-3, -0.1, 12).reshape(6, 2)
    ev.update("forget", _stats(rows))
    ev.update("approximate", _stats(rows.clone()))
    out = ev.compute()
    assert float(out["mia/loss_auc"]) == pytest.approx(0.5)
    assert float(out["mia/min_k_auc"]) == pytest.approx(0.5)
    assert math.isnan(float(out["mia/zlib_auc"]))


# ------------------------------------------------------------------------------ the stop
class _Scripted(Lg.LightningModule):
    """Logs scripted perplexities at each validation, keyed by global step."""

    def __init__(self, forget_by_step, approximate=10.0):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.forget_by_step, self.approximate = forget_by_step, approximate

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        step = self.global_step
        self.log("val/forget/ppl", float(self.forget_by_step[step]))
        if self.approximate is not None:
            self.log("val/approximate/ppl", float(self.approximate) + 0.1 * step)
        self.log("val/retain/ppl", 5.0 + step)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


FORGET_SCRIPT = [5.0, 6.0, 7.5, 9.2, 10.1, 12.0, 15.0, 20.0, 30.0, 40.0, 50.0]


def _trainer(callback, **kw):
    kw.setdefault("val_check_interval", 1)
    return Lg.Trainer(
        max_steps=10,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        callbacks=[callback],
        **kw,
    )


def _loader(n):
    return torch.utils.data.DataLoader(torch.zeros(n, 1), batch_size=1)


@pytest.mark.parametrize(
    "tolerance, interval, stop",
    [(0.0, 1, 4), (0.1, 1, 3), (0.0, 2, 4), (0.1, 2, 4), (0.0, 3, 6)],
)
def test_stopping_stops_at_the_scripted_step(tolerance, interval, stop):
    callback = ApproximateRetrainStopping(tolerance=tolerance)
    module = _Scripted(FORGET_SCRIPT)
    trainer = _trainer(callback, val_check_interval=interval)
    trainer.validate(module, _loader(1), verbose=False)  # step 0: target = 10.0
    assert callback.target_ppl == pytest.approx(10.0)
    trainer.fit(module, _loader(20), _loader(1))
    assert callback.stopped_step == stop
    assert trainer.global_step == stop
    steps = [h["step"] for h in callback.history]
    assert steps == [0, *range(interval, stop + 1, interval)]
    assert callback.history[-1]["forget"] == pytest.approx(FORGET_SCRIPT[stop])
    assert callback.history[0] == {
        "step": 0,
        "forget": 5.0,
        "approximate": 10.0,
        "retain": 5.0,
        "general": None,
    }


def test_stopping_with_explicit_target_and_full_sanity_check():
    callback = ApproximateRetrainStopping(target_ppl=15.0)
    trainer = _trainer(callback)
    trainer.fit(_Scripted(FORGET_SCRIPT), _loader(20), _loader(1))
    assert callback.stopped_step == 6 and trainer.global_step == 6
    # num_sanity_val_steps=-1 is a full validation at step 0: it sets the target
    callback = ApproximateRetrainStopping()
    trainer = _trainer(callback)
    trainer.num_sanity_val_steps = float("inf")
    trainer.fit(_Scripted(FORGET_SCRIPT), _loader(20), _loader(1))
    assert callback.target_ppl == pytest.approx(10.0) and callback.stopped_step == 4


def test_stopping_with_empty_approximate_split_fails_clearly():
    callback = ApproximateRetrainStopping()
    trainer = _trainer(callback)
    with pytest.raises(
        EmptyApproximateSplitError, match="approximate split is empty.*pass target_ppl"
    ):
        trainer.validate(_Scripted(FORGET_SCRIPT, approximate=None), _loader(1), verbose=False)
    # a NaN perplexity (what an empty split would have produced) is refused the same way
    fake = SimpleNamespace(global_step=0, state=SimpleNamespace(fn=None))
    with pytest.raises(EmptyApproximateSplitError, match="got nan"):
        callback.check(
            fake,
            {"val/forget/ppl": torch.tensor(3.0), "val/approximate/ppl": torch.tensor(math.nan)},
        )
    # fitting without any target is refused before the first step
    trainer = _trainer(ApproximateRetrainStopping())
    with pytest.raises(EmptyApproximateSplitError, match="has no target"):
        trainer.fit(_Scripted(FORGET_SCRIPT), _loader(20), _loader(1))


# ------------------------------------------------------------------------------ the report
def _flat(forget, approximate, retain, general, auc):
    out = {
        "forget/ppl": forget,
        "approximate/ppl": approximate,
        "retain/ppl": retain,
        "general/ppl": general,
    }
    for score in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        out[f"mia/{score}_auc"] = auc
        out[f"mia/{score}_tpr_at_5_fpr"] = auc / 2
    return out


def test_report_files_have_the_documented_shape(tmp_path):
    before = _flat(4.0, 10.0, 5.0, 20.0, 0.9)
    # after as trainer.validate returns it: a list of dicts with val/ keys and tensors
    after = [{f"val/{k}": torch.tensor(v) for k, v in _flat(10.5, 11.0, 5.5, 21.0, 0.52).items()}]
    history = [
        {"step": 0, "forget": 4.0, "approximate": 10.0, "retain": 5.0, "general": 20.0},
        {"step": 3, "forget": 10.5, "approximate": 11.0, "retain": 5.5, "general": 21.0},
    ]
    documents = {"after": {"forget": {"doc_index": [0, 1], "ppl": [10.0, 11.0]}}}
    report = build_report(
        model="tiny",
        method="GradientAscentDescent",
        steps=3,
        seconds=1.25,
        before=before,
        after=after,
        target_ppl=None,
        columns={"exact_retrain": _flat(9.8, 10.0, 5.0, 20.0, 0.5)},
        documents=documents,
        history=history,
    )
    paths = write_report(report, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.json",
        "report.md",
        "documents.csv",
        "perplexity.png",
    }

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert {"model", "method", "steps", "seconds", "before", "after", "target_ppl",
            "exact_retrain", "columns", "rows", "verdict", "metrics", "documents"} <= set(data)  # fmt: skip
    assert (data["model"], data["method"], data["steps"], data["seconds"]) == (
        "tiny",
        "GradientAscentDescent",
        3,
        1.25,
    )
    assert data["columns"] == ["before", "after", "exact_retrain"]
    for name in ("before", "after", "exact_retrain"):
        assert set(data[name]) == set(before)  # every value, flat, in every column
    assert data["target_ppl"] == 10.0  # before's approximate perplexity
    assert data["before"]["forget/ppl"] == 4.0
    assert data["after"]["forget/ppl"] == pytest.approx(10.5)
    assert data["after"]["mia/min_k_auc"] == pytest.approx(0.52)
    assert data["exact_retrain"]["forget/ppl"] == pytest.approx(9.8)
    assert data["documents"]["after"]["forget"]["ppl"] == [10.0, 11.0]
    # the table's rows come from the default metrics, in their order: perplexity, then MIA AUCs
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["forget ppl", "approximate ppl", "retain ppl", "general ppl",
                      "MIA AUC loss", "MIA AUC zlib", "MIA AUC min_k (k = 0.2)",
                      "MIA AUC min_k_plus_plus (k = 0.2)"]  # fmt: skip
    md = paths["markdown"].read_text()
    assert "| forget ppl | 4.000 | 10.500 | 9.800 | +162.5% |" in md
    assert "| MIA AUC loss | 0.900 | 0.520 | 0.500 | -0.380 |" in md
    assert "PASS: forget ppl 10.500 is +5.0% from the target 10.000" in md
    assert "PASS: loss-MIA AUC 0.520" in md
    assert "| 1 | — | 11.000 | — |" in md  # the per-document table (no before, no unseen split)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(data)
    assert (
        "retain ppl" in table
        and "+10.0%" in table
        and "target (approximate-retrain) ppl: 10.000" in table
    )


def test_report_without_approximate_split_fails_clearly(tmp_path):
    before = {"forget/ppl": 4.0, "retain/ppl": 5.0}
    with pytest.raises(EmptyApproximateSplitError, match="approximate split is empty"):
        build_report(model="m", method="x", steps=1, seconds=0.1, before=before, after=before)
    with pytest.raises(EmptyApproximateSplitError, match="got nan"):
        build_report(
            model="m",
            method="x",
            steps=1,
            seconds=0.1,
            before=before,
            after=before,
            target_ppl=math.nan,
        )
    # a split that was not evaluated is absent; a value that could not be computed is null
    report = build_report(
        model="m", method="x", steps=1, seconds=0.1, before=before,
        after={**before, "mia/loss_auc": math.nan}, target_ppl=7.0,
    )  # fmt: skip
    assert "general/ppl" not in report["before"]
    data = json.loads(write_report(report, tmp_path)["json"].read_text())
    assert data["after"]["mia/loss_auc"] is None


# ------------------------------------------------------------------------------ memorisation
def test_lcs_rouge_and_exact_match_by_hand():
    assert lcs_length([1, 2, 3, 4], [1, 3, 4, 5]) == 3
    assert lcs_length([], [1]) == 0
    assert rouge_l_f1([1, 3, 4, 5], [1, 2, 3, 4]) == pytest.approx(0.75)
    # P = 2/2, R = 2/4 -> F1 = 2/3
    assert rouge_l_f1([7, 9], [7, 8, 9, 10]) == pytest.approx(2 / 3)
    assert rouge_l_f1([5, 6], [1, 2]) == 0.0
    assert exact_match_length([1, 2, 9, 4], [1, 2, 3, 4]) == 2
    assert exact_match_length([0], [1]) == 0


def test_rouge_l_matches_rouge_score_package():
    from rouge_score import rouge_scorer

    gen, ref = [4, 1, 8, 8, 2, 9, 3], [1, 2, 3, 4, 8, 9]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = scorer.score(" ".join(f"t{x}" for x in ref), " ".join(f"t{x}" for x in gen))[
        "rougeL"
    ].fmeasure
    assert rouge_l_f1(gen, ref) == pytest.approx(expected)


def test_greedy_continuation_matches_a_loop_without_cache(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor(tiny_tokenizer(FORGET_TEXTS[1])["input_ids"][:6])
    expected = ids.clone()
    with torch.no_grad():
        for _ in range(8):
            expected = torch.cat(
                [expected, model(input_ids=expected[None]).logits[0, -1].argmax()[None]]
            )
    assert greedy_continuation(model, ids, 8) == expected[6:].tolist()


class _Bigram(nn.Module):
    """A model that always predicts token ``(t + 3) % 10`` after token ``t`` (cache-free)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kwargs):
        logits = 10.0 * nn.functional.one_hot((input_ids + 3) % 10, 10).float()
        return SimpleNamespace(logits=logits, past_key_values=None)


def test_verbatim_memorisation_by_hand():
    docs = [
        [0, 3, 6, 9, 2, 5, 8, 1],  # follows the model's chain: memorised
        torch.tensor([1, 4, 7, 0, 9, 9, 9]),  # generation 7 0 3 6 9 vs truth 7 0 9 9 9
        [5, 8],  # nothing after the prefix: skipped
    ]
    got = verbatim_memorisation(_Bigram(), docs, prefix_len=2, max_new_tokens=5)
    assert got["documents"] == 2
    assert [d["exact_match_len"] for d in got["per_document"]] == [5, 2]
    # second: LCS(7 0 3 6 9, 7 0 9 9 9) = 3 -> P = R = 3/5 -> F1 0.6
    assert [d["rouge_l"] for d in got["per_document"]] == pytest.approx([1.0, 0.6])
    assert got["rouge_l"] == pytest.approx(0.8) and got["exact_match_len"] == pytest.approx(3.5)
    short = verbatim_memorisation(_Bigram(), docs[:1], prefix_len=5, max_new_tokens=10)
    assert short["per_document"][0]["length"] == 3  # the document ends before max_new_tokens
    with pytest.raises(ValueError, match="no document has more than prefix_len=20"):
        verbatim_memorisation(_Bigram(), docs, prefix_len=20, max_new_tokens=10)


# ------------------------------------------------------------------------------ evaluate_splits
def _eval_batches(tokenizer):
    out = []
    for split, texts in (
        ("forget", FORGET_TEXTS[:2]),
        ("forget", FORGET_TEXTS[2:]),
        ("approximate", RETAIN_TEXTS[:2]),
        ("retain", RETAIN_TEXTS[2:]),
    ):
        batch = make_batch(tokenizer, texts)
        batch["split"] = split
        batch["zlib_len"] = torch.tensor([len(zlib.compress(t.encode("utf-8"))) for t in texts])
        out.append(batch)
    return out


def test_evaluate_splits_agrees_with_trainer_validate(tiny_model_dir, tiny_tokenizer):
    from lightning_unlearn import GradientAscent

    module = GradientAscent(str(tiny_model_dir))
    batches = _eval_batches(tiny_tokenizer)
    direct = evaluate_splits(module, batches)
    trainer = Lg.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    validated = trainer.validate(
        module, torch.utils.data.DataLoader(batches, batch_size=None), verbose=False
    )
    assert set(validated[0]) == {f"val/{k}" for k in direct}
    # the data module's form: a sequential CombinedLoader of one loader per split
    from lightning.pytorch.utilities import CombinedLoader

    combined = CombinedLoader(
        {"forget": batches[:2], "approximate": batches[2:3], "retain": batches[3:]}, "sequential"
    )
    assert evaluate_splits(module, combined) == pytest.approx(direct, rel=1e-6)
    for key, value in direct.items():
        assert validated[0][f"val/{key}"] == pytest.approx(value, rel=1e-5), key
    # perplexity is exp(total NLL / total tokens) over the split's batches
    with torch.no_grad():
        nll = sum(-token_statistics(module(b), b["labels"])["logprob"].sum() for b in batches[:2])
        tokens = sum((b["labels"][:, 1:] != -100).sum() for b in batches[:2])
    assert direct["forget/ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert {"mia/loss_auc", "mia/zlib_tpr_at_5_fpr", "retain/acc"} <= set(direct)
    assert "general/ppl" not in direct


def test_the_document_table_ranks_what_it_still_knows_and_the_csv_keeps_everything(tmp_path):
    """report.md: forget documents by after-perplexity over the unseen median of the original
    model (approximate before: 8, 10, 12 -> 10), at most eight columns; documents.csv: every
    per-document value of every split and column."""
    metrics = _flat(4.0, 10.0, 5.0, 20.0, 0.9)
    documents = {
        "before": {
            "forget": {"doc_index": [7, 8, 9], "ppl": [3.0, 4.0, 5.0], "mia/zlib": [1, 2, 3]},
            "approximate": {"doc_index": [0, 1, 2], "ppl": [8.0, 12.0, 10.0]},
        },
        "after": {
            "forget": {"doc_index": [7, 8, 9], "ppl": [5.0, 12.0, 9.0], "mia/loss": [-1.6, -2.5, -2.2],
                       "mia/zlib": [0.1, 0.2, 0.3], "memorisation/exact": [0.5, 0.1, 0.2]},
        },
    }  # fmt: skip
    report = build_report(model="m", method="GA", steps=1, seconds=1.0, before=metrics,
                          after=metrics, documents=documents)  # fmt: skip
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    table = md.split("### forget: 3 documents")[1].split("\n\n")[1].splitlines()
    assert table[0] == ("| document | ppl before | ppl after | after / unseen median | "
                        "loss attack (after) | exact memorisation (after) |")  # fmt: skip
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 7", "| 9", "| 8"]  # 0.5, 0.9, 1.2
    assert table[2].split(" | ")[1:4] == ["3.000", "5.000", "0.500"]
    assert "mia/zlib" not in md.split("## Per document")[1]
    rows = (tmp_path / "documents.csv").read_text().splitlines()
    assert rows[0] == ("split,document,ppl (before),mia/zlib (before),ppl (after),mia/loss (after),"
                       "mia/zlib (after),memorisation/exact (after)")  # fmt: skip
    assert rows[1] == "forget,7,3.0,1,5.0,-1.6,0.1,0.5"
    assert rows[4] == "approximate,0,8.0,,,,,"
