"""MUSE's and TOFU's ROUGE-L, KnowMem's answer cut, Min-K% and PrivLeak against numbers their
reference code produced (see tests/test_reference_numbers.py for how the fixtures are made)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_reference_numbers import load

# ------------------------------------------------- MUSE (muse_bench) and TOFU ROUGE, MUSE PrivLeak
MUSE = load("muse_rouge_privleak.json")


def test_rouge_l_f1_is_muses_knowmem_and_verbmem_score():
    from lightning_unlearn.evaluation.rouge import rouge_l

    pairs = MUSE["rouge_pairs"]
    ours = rouge_l([p["prediction"] for p in pairs], [p["reference"] for p in pairs])
    # torchmetrics scores in float32: agreement to ~1e-7
    np.testing.assert_allclose(ours["f1"], MUSE["muse_rougeL_f1"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["recall"], MUSE["muse_rougeL_recall"], rtol=0, atol=1e-6)
    assert np.mean(ours["f1"]) == pytest.approx(MUSE["muse_mean_rougeL"], abs=1e-6)


def test_rouge_l_recall_with_the_stemmer_is_tofus():
    from lightning_unlearn.evaluation.rouge import rouge_l

    pairs = MUSE["rouge_pairs"]
    ours = rouge_l(
        [p["prediction"] for p in pairs], [p["reference"] for p in pairs], use_stemmer=True
    )
    np.testing.assert_allclose(
        ours["recall"], MUSE["tofu_rougeL_recall_stemmed"], rtol=0, atol=1e-6
    )


def test_knowmem_cuts_answers_where_muse_does():
    from lightning_unlearn.evaluation.muse import cut_answer

    cut = MUSE["knowmem_cut"]
    assert [cut_answer(o) for o in cut["outputs"]] == cut["cut"]


def _muse_documents(texts):
    import torch

    from lightning_unlearn.evaluation.documents import SplitDocuments

    logprobs = [torch.tensor(MUSE["privleak"]["token_logprobs"][t], dtype=torch.float64)
                for t in texts]  # fmt: skip
    return SplitDocuments(split="x", doc_index=list(range(len(texts))), logprob=logprobs)


@pytest.mark.parametrize("k", ["0.2", "0.4"])
def test_min_k_and_privleak_auc_are_muses(k):
    import torch

    from lightning_unlearn.evaluation.mia import min_k_score
    from lightning_unlearn.evaluation.muse import min_k_auc_muse

    p = MUSE["privleak"]
    for text, scores in p["min_k"].items():
        logprob = torch.tensor([p["token_logprobs"][text]], dtype=torch.float64)
        ours = min_k_score(logprob, torch.ones_like(logprob, dtype=torch.bool), k=float(k))
        # MUSE's Min-K% is the negative mean (higher: less likely a member)
        assert float(ours[0]) == pytest.approx(-scores[k], abs=1e-12)
    auc = min_k_auc_muse(_muse_documents(p["forget"]), _muse_documents(p["holdout"]), k=float(k))
    assert auc == pytest.approx(p[f"auc_forget_holdout_min_k_{k}"], abs=1e-12)


def test_privleak_uses_muses_retrain_constants():
    from lightning_unlearn.evaluation.benchmarks_math import MUSE_RETRAIN_AUC, privleak

    p = MUSE["privleak"]
    assert pytest.approx(p["auc_retrain"], abs=1e-12) == MUSE_RETRAIN_AUC
    auc = p["auc_forget_holdout_min_k_0.4"]
    for corpus in ("news", "books"):
        expected = p[f"privleak_{corpus}"]
        assert privleak(auc, MUSE_RETRAIN_AUC[corpus]) == pytest.approx(expected, abs=1e-9)


class _CharTokenizer:
    """One token per character after a BOS 1 (the stand-in the fixture's run of knowmem.eval used)."""

    pad_token_id, eos_token_id = 0, None

    def __call__(self, text):
        class Encoding:
            input_ids = [1] + [ord(c) for c in text]

        return Encoding()

    def batch_decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=True):
        return ["".join(chr(i) for i in row) for row in ids]


def test_knowmem_defaults_prompt_cut_and_score_as_muse(tmp_path, monkeypatch):
    from lightning_unlearn.evaluation import muse

    ref = MUSE["knowmem_eval"]
    qa, icl = tmp_path / "qa.json", tmp_path / "icl.json"
    qa.write_text(json.dumps([{"question": q, "answer": a}
                              for q, a in zip(ref["questions"], ref["answers"])]))  # fmt: skip
    icl.write_text(json.dumps([{"question": q, "answer": a} for q, a in ref["icl"]]))
    seen = []

    def canned(model, prompts, **kwargs):  # the stand-in model of the fixture's run
        texts = ["".join(chr(i) for i in p[1:]) for p in prompts]
        seen.extend(texts)
        question = [t.rsplit("Question: ", 1)[1].split("\nAnswer: ")[0] for t in texts]
        return [[ord(c) for c in ref["generated"][q]] for q in question]

    monkeypatch.setattr(muse, "greedy_generate", canned)
    metric = muse.KnowMem(forget_qa=str(qa), forget_icl=str(icl))
    result = metric.compute(None, _CharTokenizer(), {})
    assert seen == ref["prompts"]
    f1 = result.documents["knowmem_forget"]["knowmem/rouge_l_f1"]
    np.testing.assert_allclose(f1, ref["rougeL_f1"], rtol=0, atol=1e-6)
    assert result.values["knowmem/forget_rouge_l_f1"] == pytest.approx(ref["mean_rougeL"], abs=1e-6)
    assert metric.label("knowmem/forget_rouge_l_f1") == (
        "KnowMem forget (ROUGE-L F1, as MUSE, few-shot MUSE prompt)"
    )
    assert [muse.cut_answer(ref["generated"][q]) for q in ref["questions"]] == ref["responses"]


def test_privleak_on_muse_data_divides_by_muses_constant():
    from lightning_unlearn.evaluation.muse import PrivLeak

    p = MUSE["privleak"]
    docs = {"forget": _muse_documents(p["forget"]), "approximate": _muse_documents(p["holdout"])}
    metric = PrivLeak(retrain_auc="news")
    result = metric.compute(docs, None)
    assert result.values["privleak/auc_retrain"] == pytest.approx(p["auc_retrain"]["news"])
    assert result.values["privleak/privleak"] == pytest.approx(p["privleak_news"], abs=1e-9)
    line = metric.verdict({"after": result.values})[0]
    assert "0.477 from MUSE's retrain AUC for News" in line
    with pytest.raises(ValueError, match="MUSE's corpora"):
        PrivLeak(retrain_auc="wiki")


def test_verbmem_scores_muses_own_verbmem_outputs_as_muse():
    # verbmem.eval's logged (truth, continuation) pairs, scored by VerbMem's ROUGE (text, F1).
    # MUSE compares max_new_tokens generated tokens with max_new_tokens - 1 true ones (its truth
    # is tokenised with the BOS and then cut); VerbMem compares equal lengths of its documents.
    from lightning_unlearn.evaluation.rouge import rouge_l

    ref = MUSE["verbmem_eval"]
    assert [len(g) for g in ref["gt_short"]] == [ref["max_new_tokens"] - 1] * len(ref["gts"])
    ours = rouge_l(ref["responses"], ref["gt_short"])["f1"]
    np.testing.assert_allclose(ours, ref["rougeL_f1"], rtol=0, atol=1e-6)
