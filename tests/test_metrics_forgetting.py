"""The metrics added for the competition / MUSE yardsticks, through the evaluation seam: the
reference-model and gradient-norm attacks, AUC intervals and the over-unlearning verdict,
memorisation, VerbMem, PrivLeak; the per-document list and the model card of a run."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from conftest import TINY_CORPUS
from transformers import AutoModelForCausalLM

from lightning_unlearn.evaluation import (
    GradientNormMembership,
    MembershipInference,
    Memorisation,
    PrivLeak,
    ReferenceMembership,
    SplitDocuments,
    VerbatimMemorisation,
    build_report,
    roc_auc,
)
from lightning_unlearn.evaluation.memorisation_math import exact_memorisation, extraction_strength
from lightning_unlearn.evaluation.mia_attacks import head_gradient_norm


def _docs(split, logprobs, correct=None):
    docs = SplitDocuments(split)
    for i, lp in enumerate(logprobs):
        docs.doc_index.append(i)
        docs.logprob.append(torch.tensor(lp, dtype=torch.float32))
        c = correct[i] if correct else [False] * len(lp)
        docs.correct.append(torch.tensor(c))
        docs.mu.append(torch.zeros(len(lp)))
        docs.sigma.append(torch.ones(len(lp)))
    return docs


def test_reference_attack_by_hand():
    # the evaluated model fits the forget documents better than the reference does
    mine = {"forget": _docs("forget", [[-1.0, -1.0], [-2.0]]),
            "approximate": _docs("approximate", [[-3.0], [-2.0, -4.0]])}  # fmt: skip
    ref = {"forget": _docs("forget", [[-2.0, -2.0], [-2.5]]),
           "approximate": _docs("approximate", [[-3.0], [-3.5, -2.5]])}  # fmt: skip
    result = ReferenceMembership("ref", confidence=None).compute(mine, ref)
    # scores = mean lp mine - mean lp ref: forget (1.0, 0.5), approximate (0.0, 0.0) -> AUC 1
    assert result.documents["forget"]["mia_ref/reference"] == [1.0, 0.5]
    assert result.documents["approximate"]["mia_ref/reference"] == [0.0, 0.0]
    assert result.values["mia_ref/reference_auc"] == 1.0
    assert ReferenceMembership(None).compute(mine, None).values == {}  # no reference: skipped


def test_head_gradient_norm_equals_autograd():
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    targets = torch.tensor([1, 0, 6, 3, 3])
    w = weight.clone().double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(hidden.double() @ w.T, targets)
    (grad,) = torch.autograd.grad(loss, w)
    assert head_gradient_norm(hidden, weight, targets) == pytest.approx(
        float(grad.norm()), rel=1e-9
    )


def test_gradient_norm_attack_on_a_model_matches_a_backward_per_document(
    trained_tiny_model_dir, tiny_datamodule_kwargs
):
    """Through the evaluation pass (hidden states collected for forget and approximate only),
    each document's score is minus the norm of the gradient of its mean NLL with respect to the
    output projection, as one backward through the model computes it."""
    from lightning_unlearn.data import UnlearningDataModule
    from lightning_unlearn.evaluation import evaluate_model

    data = UnlearningDataModule(**tiny_datamodule_kwargs)
    data.setup("validate")
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_model_dir)
    metric = GradientNormMembership(confidence=None)
    evaluator = evaluate_model(model, data.eval_loaders(), metrics=[metric])
    docs = evaluator.last_documents
    assert docs["forget"].hidden and not docs["retain"].hidden  # only where the metric reads them
    scores = evaluator.last.documents["forget"]["mia_grad/gradient_norm"]
    first = data.eval_dataset("forget")[0]  # document 0 is one window here
    ids = torch.tensor([first["input_ids"]])
    model.zero_grad()
    out = model(input_ids=ids)
    torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:]).backward()
    expected = -float(model.lm_head.weight.grad.norm())
    assert scores[0] == pytest.approx(expected, rel=1e-4)
    auc = evaluator.last.values["mia_grad/gradient_norm_auc"]
    assert auc == roc_auc(torch.tensor(scores), torch.tensor(
        evaluator.last.documents["approximate"]["mia_grad/gradient_norm"]))  # fmt: skip
    # the model memorised the forget texts: small gradients there, members score higher
    assert auc > 0.7


def test_intervals_and_the_over_unlearning_verdict():
    forget = _docs("forget", [[-9.0], [-8.0], [-9.5], [-8.5], [-9.2], [-8.8]])
    approx = _docs("approximate", [[-1.0], [-2.0], [-1.5], [-2.5], [-1.2], [-1.8]])
    metric = MembershipInference()
    result = metric.compute({"forget": forget, "approximate": approx})
    low, high = result.values["mia/loss_auc_low"], result.values["mia/loss_auc_high"]
    assert result.values["mia/loss_auc"] == 0.0 and low <= 0.0 <= high < 0.5
    report = build_report(model="m", method="x", steps=1, seconds=1.0,
                          before={"approximate/ppl": 5.0}, after=result.values,
                          target_ppl=5.0, metrics=[metric])  # fmt: skip
    assert any(line.startswith("OVER-UNLEARNED: mia loss AUC 0.000") for line in report["verdict"])
    # overlapping populations: the interval straddles 0.5, no over-unlearning verdict
    mixed = metric.compute({"forget": forget, "approximate": _docs("approximate",
                            [[-9.1], [-8.2], [-9.3], [-8.6], [-9.0], [-8.9]])})  # fmt: skip
    assert mixed.values["mia/loss_auc_low"] < 0.5 < mixed.values["mia/loss_auc_high"]


def test_memorisation_metric_is_the_per_document_math():
    correct = [[True, True, False, True], [False, True, True]]
    docs = _docs("forget", [[-0.1] * 4, [-0.2] * 3], correct)
    result = Memorisation().compute({"forget": docs})
    exact = result.documents["forget"]["memorisation/exact"]
    assert exact == pytest.approx([0.75, 2 / 3])
    # extraction: the last token right in both; first row: the suffix from k=3 is all right -> 1-3/4
    assert result.documents["forget"]["memorisation/extraction"] == pytest.approx([0.25, 2 / 3])
    c = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    assert exact_memorisation(c, m).tolist() == pytest.approx(exact)
    assert extraction_strength(c, m).tolist() == pytest.approx([0.25, 2 / 3])
    assert result.values["memorisation/forget_exact"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_privleak_by_hand():
    # Min-K% 40% of one-token documents = their logprob: forget all higher -> our AUC 1,
    # MUSE's (holdout positive) 0 -> PrivLeak (0 - 0.5) / 0.5 = -100
    forget = _docs("forget", [[-1.0], [-1.5]])
    holdout = _docs("approximate", [[-3.0], [-2.5]])
    result = PrivLeak().compute({"forget": forget, "approximate": holdout}, None)
    assert result.values["privleak/auc"] == 0.0 and result.values["privleak/auc_retrain"] == 0.5
    assert result.values["privleak/privleak"] == pytest.approx(-100.0)
    # a retrain model that cannot tell them apart: equal scores -> AUC 0.5 -> reference 0.5
    same = _docs("forget", [[-2.0], [-2.0]])
    with_model = PrivLeak("retrain").compute(
        {"forget": forget, "approximate": holdout},
        {"forget": same, "approximate": _docs("approximate", [[-2.0], [-2.0]])},
    )
    assert with_model.values["privleak/auc_retrain"] == 0.5
    assert PrivLeak(retrain_auc=0.25).compute(
        {"forget": forget, "approximate": holdout}, None
    ).values["privleak/privleak"] == pytest.approx(-100.0)


class _WordTokenizer:
    """One token per word of ``VOCAB``; decoding joins the words with spaces."""

    VOCAB = ["<pad>", "once", "upon", "the", "cat", "sat", "down", "SAT", "on", "mat", "on the",
             "today", "a", "time", "end"]  # fmt: skip
    pad_token_id = 0

    def batch_decode(self, rows):
        return [" ".join(self.VOCAB[i] for i in row) for row in rows]


# VerbMem's documents (prefix 2 tokens, continuation at most 4), the continuations the "model"
# gives, and the ROUGE-L F1 of each, worked out by hand: F1 = 2PR / (P + R), P = LCS / generated,
# R = LCS / truth; on token ids, or on lower-cased words of the decoded texts (MUSE's rougeL)
VERBMEM_DOCUMENTS = [
    [1, 2, 3, 4, 5, 6, 14],  # truth "the cat sat down" (14 is past the 4 tokens)
    [2, 1, 8, 3, 9],  # truth "on the mat" (the document ends sooner)
    [12, 13],  # no token after the prefix: not scored
    [13, 12, 4, 9],  # truth "cat mat"
]
VERBMEM_GENERATED = {
    # "the cat SAT down": ids LCS 3 of 4 -> 3/4; words (lower-cased) all 4 -> 1
    (1, 2): [3, 4, 7, 6],
    # "on the mat today" (id 10 is the two words "on the"): ids LCS 1 ({9}) of 3 -> 1/3;
    # words: LCS 3, P = 3/4, R = 3/3 -> F1 = (3/2) / (7/4) = 6/7
    (2, 1): [10, 9, 11],
    # "mat cat" against "cat mat": the order counts, LCS 1 of 2 -> 1/2 either way
    (13, 12): [9, 4],
}
VERBMEM_TOKEN_F1 = [3 / 4, 1 / 3, math.nan, 1 / 2]
VERBMEM_TEXT_F1 = [1.0, 6 / 7, math.nan, 1 / 2]


@pytest.mark.parametrize("rouge, expected", [("tokens", VERBMEM_TOKEN_F1),
                                             ("text", VERBMEM_TEXT_F1)])  # fmt: skip
def test_verbmem_scores_controlled_continuations_by_hand(rouge, expected, monkeypatch):
    from lightning_unlearn.evaluation import memorisation
    from lightning_unlearn.evaluation.base import SplitTexts

    calls = []

    def canned(model, prompts, *, max_new_tokens, **kwargs):  # the "model"'s greedy decoding
        calls.append(([list(p) for p in prompts], list(max_new_tokens)))
        return [VERBMEM_GENERATED[tuple(p)][:n] for p, n in zip(prompts, max_new_tokens)]

    monkeypatch.setattr(memorisation, "greedy_generate", canned)
    texts = {"forget": SplitTexts(split="forget", doc_index=[0, 1, 2, 3],
                                  input_ids=VERBMEM_DOCUMENTS, texts=[""] * 4)}  # fmt: skip
    metric = VerbatimMemorisation(prefix_tokens=2, continuation_tokens=4, rouge=rouge)
    result = metric.compute(None, _WordTokenizer(), texts)
    # prompts are the first 2 tokens; each continuation as long as the truth (4, 3, 2 tokens)
    assert calls == [([[1, 2], [2, 1], [13, 12]], [4, 3, 2])]
    per_doc = result.documents["forget"]["verbmem/rouge_l"]
    assert math.isnan(per_doc[2])
    assert per_doc[:2] + per_doc[3:] == pytest.approx(expected[:2] + expected[3:], abs=1e-6)
    mean = (expected[0] + expected[1] + expected[3]) / 3  # 19/36 on ids, 11/14 on words
    assert result.values["verbmem/forget_rouge_l"] == pytest.approx(mean, abs=1e-6)
    on = "token ids" if rouge == "tokens" else "text"
    assert f"ROUGE-L F1 on {on}, 2+4" in metric.label("verbmem/forget_rouge_l")


def test_model_card_and_per_document_list_of_a_fit(tiny_model_dir, tiny_corpus_dir, tmp_path):
    import yaml
    from test_cli import write_config

    from lightning_unlearn.cli import main

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tiny_corpus_dir, tmp_path / "cache")
    config = yaml.safe_load(cfg.read_text())
    config["trainer"]["max_steps"] = 2
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--output_dir", str(out),
                 "--stop_at_target", "false"]) == 0  # fmt: skip
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "machine-unlearning" in card
    assert "GradientAscentDescent" in card and "learning_rate" in card
    for text in TINY_CORPUS["forget"]:
        assert hashlib.sha256(text.encode()).hexdigest() in card
    import lightning_unlearn

    assert f"lightning-unlearn {lightning_unlearn.__version__}" in card
    assert "| forget ppl |" in card
    report = json.loads((out / "report.json").read_text())
    forget = report["documents"]["after"]["forget"]
    assert len(forget["ppl"]) == len(TINY_CORPUS["forget"]) and "mia/loss" in forget
    md = (out / "report.md").read_text()
    assert "## Forget documents still given back best" in md
    best = min(range(len(forget["ppl"])), key=lambda i: forget["ppl"][i])
    assert f"| {forget['doc_index'][best]} |" in md.split("still given back best")[1]
