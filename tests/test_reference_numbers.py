"""Every benchmark metric against numbers its reference code produced.

Each fixture in ``tests/fixtures/references/`` names the repository, file(s) and 40-hex commit it
came from and how the reference was run (in a scratch environment outside this project, on the
small fixed inputs stored beside the outputs). Nothing here re-states a reference formula: the
expected values are the reference's own output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "references"


def load(name: str) -> dict:
    data = json.loads((FIXTURES / name).read_text())
    source = data["source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), source
    assert source["repository"] and source["files"]
    return data


# ------------------------------------------------------------- NeurIPS 2023 competition (metric.py)
COMPETITION = load("competition_forgetting_quality.json")


@pytest.mark.parametrize(
    "case", COMPETITION["cases"], ids=[f"N{c['n']}-{c['name']}" for c in COMPETITION["cases"]]
)
def test_competition_defaults_reproduce_metric_py(case):
    from lightning_unlearn.evaluation.forgetting_quality import (
        epsilon_per_example,
        forgetting_quality,
        points,
    )

    u, r = np.array(case["unlearned"]), np.array(case["retrained"])
    eps = epsilon_per_example(u, r)
    np.testing.assert_allclose(eps, case["epsilon"], rtol=0, atol=1e-6)
    assert points(eps, case["n"]).tolist() == case["points"]
    assert forgetting_quality(u, r) == pytest.approx(case["F"], abs=1e-12)


def test_competition_fixture_covers_both_sizes():
    sizes = [c["n"] for c in COMPETITION["cases"]]
    assert sizes.count(8) == 3 and sizes.count(512) == 3


def test_every_interval_stays_an_option_and_finds_more_rules():
    # N = 512, two identical N(0, 1) populations: the every-interval search finds tail rules the
    # reference's window does not reach, so its epsilon is never smaller and F is lower
    from lightning_unlearn.evaluation.forgetting_quality import (
        epsilon_per_example,
        forgetting_quality,
    )

    case = next(c for c in COMPETITION["cases"] if c["n"] == 512)
    u, r = np.array(case["unlearned"]), np.array(case["retrained"])
    every = epsilon_per_example(u, r, thresholds="exact", window=None)
    assert (every >= np.array(case["epsilon"]) - 1e-6).all()
    assert forgetting_quality(u, r, thresholds="exact", window=None) < case["F"]
    with pytest.raises(ValueError, match="window > 0"):
        epsilon_per_example(u, r, window=None)
    with pytest.raises(ValueError, match="thresholds must be"):
        epsilon_per_example(u, r, thresholds="every")


# ------------------------------------------------------------------ TOFU (aggregate_eval_stat.py)
TOFU = load("tofu_aggregate.json")
TOFU_SETS = {  # TOFU's file -> its name in the output
    "eval_log.json": "Retain",
    "eval_real_author_wo_options.json": "Real Authors",
    "eval_real_world_wo_options.json": "Real World",
    "eval_log_forget.json": "Forget",
}


def tofu_inputs(result: dict, file: str):
    """Mean token log-probs (TOFU stores their negatives, ``avg_*_loss``), in question order."""
    import torch

    data = result[file]
    keys = list(data["avg_gt_loss"])

    def lp(name):
        return -torch.tensor([data[name][k] for k in keys], dtype=torch.float64)

    return lp("avg_gt_loss"), lp("average_perturb_loss"), lp("avg_paraphrased_loss"), data


def tofu_ratios(result: dict, file: str):
    from lightning_unlearn.evaluation.benchmarks_math import truth_ratio

    _, perturbed, paraphrased, _ = tofu_inputs(result, file)
    return truth_ratio(perturbed, paraphrased)


def test_tofu_forget_truth_ratio_is_tofus_symmetric_form():
    from lightning_unlearn.evaluation.benchmarks_math import forget_truth_ratio_score

    ratios = tofu_ratios(TOFU["unlearned"], "eval_log_forget.json")
    expected = TOFU["model_utility"]["Truth Ratio Forget"]
    assert forget_truth_ratio_score(ratios) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("file", ["eval_log.json", "eval_real_author_wo_options.json",
                                  "eval_real_world_wo_options.json"])  # fmt: skip
def test_tofu_utility_parts(file):
    from lightning_unlearn.evaluation.benchmarks_math import (
        normalised_answer_probability,
        truth_ratio_score,
    )

    answer, perturbed, _, data = tofu_inputs(TOFU["unlearned"], file)
    name, expected = TOFU_SETS[file], TOFU["model_utility"]
    score = truth_ratio_score(tofu_ratios(TOFU["unlearned"], file))
    assert score == pytest.approx(expected[f"Truth Ratio {name}"], abs=1e-12)
    if name == "Retain":
        probability = float(answer.exp().mean())
    else:
        probability = float(normalised_answer_probability(answer, perturbed).mean())
    assert probability == pytest.approx(expected[f"Prob. {name}"], abs=1e-12)


def test_tofu_model_utility_and_forget_quality():
    from lightning_unlearn.evaluation.benchmarks_math import tofu_forget_quality, tofu_model_utility

    expected = TOFU["model_utility"]
    parts = [expected[f"{kind} {name}"] for name in ("Retain", "Real Authors", "Real World")
             for kind in ("ROUGE", "Prob.", "Truth Ratio")]  # fmt: skip
    assert tofu_model_utility(parts) == pytest.approx(expected["Model Utility"], abs=1e-12)
    # ROUGE per set is the mean of the stored per-question recalls
    for file, name in TOFU_SETS.items():
        recalls = list(TOFU["unlearned"][file]["rougeL_recall"].values())
        assert np.mean(recalls) == pytest.approx(expected[f"ROUGE {name}"], abs=1e-12)
    quality = tofu_forget_quality(
        tofu_ratios(TOFU["unlearned"], "eval_log_forget.json"),
        tofu_ratios(TOFU["retain"], "eval_log_forget.json"),
    )
    assert quality == pytest.approx(TOFU["forget_quality"]["Forget Quality"], abs=1e-12)


def test_tofu_refuses_to_score_rouge_without_its_stemmer(monkeypatch):
    import sys

    from lightning_unlearn.evaluation.tofu import TOFU

    monkeypatch.setitem(sys.modules, "nltk", None)  # import nltk -> ImportError
    with pytest.raises(ModuleNotFoundError, match="Porter stemmer"):
        TOFU(forget="forget.json")


# ------------------------------------------- open-unlearning: memorisation, Min-K% and Min-K%++
OPEN_UNLEARNING = load("open_unlearning_memorisation_mia.json")


def _ou_statistics(doc):
    import torch

    from lightning_unlearn.losses import token_statistics

    logits = torch.tensor([doc["logits"]], dtype=torch.float64)
    return token_statistics(logits, torch.tensor([doc["labels"]]))


def test_memorisation_open_unlearning_form_reproduces_its_output():
    from lightning_unlearn.evaluation.documents import SplitDocuments
    from lightning_unlearn.evaluation.memorisation import Memorisation

    docs = OPEN_UNLEARNING["documents"]
    stats = [_ou_statistics(d) for d in docs]
    split = SplitDocuments(split="forget", doc_index=list(range(len(docs))),
                           correct=[s["correct"][0][s["mask"][0]] for s in stats])  # fmt: skip
    ou = Memorisation(splits=("forget",), form="open-unlearning").compute({"forget": split})
    per_doc = ou.documents["forget"]
    # open-unlearning's EM is a float32 division
    np.testing.assert_allclose(per_doc["memorisation/exact"],
                               OPEN_UNLEARNING["exact_memorization"], rtol=0, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(per_doc["memorisation/extraction"],
                               OPEN_UNLEARNING["extraction_strength"], rtol=0, atol=1e-12)  # fmt: skip
    # the paper's form keeps the EOS target and gives ES 0 when no suffix is reproduced
    paper = Memorisation(splits=("forget",)).compute({"forget": split}).documents["forget"]
    names = [d["name"] for d in docs]
    assert paper["memorisation/extraction"][names.index("last two wrong")] == 0.0
    assert OPEN_UNLEARNING["extraction_strength"][names.index("last two wrong")] == pytest.approx(
        1 / 6
    )
    assert paper["memorisation/exact"][names.index("only the final EOS wrong")] == pytest.approx(
        6 / 7
    )


@pytest.mark.parametrize("k", [0.2, 0.4])
def test_min_k_and_min_k_plus_plus_are_open_unlearnings(k):
    import torch

    from lightning_unlearn.evaluation.mia import min_k_plus_plus_score, min_k_score

    for doc, ref in zip(OPEN_UNLEARNING["documents"], OPEN_UNLEARNING["mia"]):
        stats = _ou_statistics(doc)
        # open-unlearning scores every target but the last (its EOS drop), with the opposite sign
        keep = stats["mask"][0].nonzero().squeeze(1)[:-1]
        logprob, mu, sigma = (stats[name][:, keep].double() for name in ("logprob", "mu", "sigma"))
        mask = torch.ones_like(logprob, dtype=torch.bool)
        np.testing.assert_allclose(logprob[0], ref["token_log_probs"], rtol=0, atol=1e-6)
        assert float(min_k_score(logprob, mask, k=k)[0]) == pytest.approx(-ref[f"min_k_{k}"],
                                                                          abs=1e-6)  # fmt: skip
        ours = float(min_k_plus_plus_score(logprob, mu, sigma, mask, k=k)[0])
        # float32 in both (the reference casts to float32): agreement to float32 precision
        assert ours == pytest.approx(-ref[f"min_k_plus_plus_{k}"], rel=1e-5, abs=1e-5)


GRADNORM = load("open_unlearning_gradnorm.json")


class _Tiny:
    """The fixture's tiny causal LM (same layers and arithmetic as its runner's)."""

    def __new__(cls):
        import types

        import torch

        class Tiny(torch.nn.Module):
            def __init__(self, vocab=10, width=4):
                super().__init__()
                self.embed = torch.nn.Embedding(vocab, width)
                self.mix = torch.nn.Linear(width, width)
                self.head = torch.nn.Linear(width, vocab)

            def forward(self, input_ids, attention_mask=None, labels=None):
                hidden = torch.tanh(self.mix(self.embed(input_ids)))
                steps = torch.arange(1, input_ids.shape[1] + 1)[:, None]
                return types.SimpleNamespace(logits=self.head(torch.cumsum(hidden, dim=1) / steps))

        model = Tiny().double()
        state = {k: torch.tensor(v, dtype=torch.float64)
                 for k, v in GRADNORM["model"]["state"].items()}  # fmt: skip
        model.load_state_dict(state)
        return model.eval()


def test_all_parameter_gradient_norm_is_open_unlearnings():
    from lightning_unlearn.evaluation.base import SplitTexts
    from lightning_unlearn.evaluation.mia_attacks import ParameterGradientNormMembership

    model, docs = _Tiny(), GRADNORM["documents"]
    texts = {name: SplitTexts(split=name, doc_index=list(range(len(part))), input_ids=part,
                              texts=[""] * len(part))
             for name, part in (("forget", docs[:2]), ("approximate", docs[2:]))}  # fmt: skip
    metric = ParameterGradientNormMembership(confidence=None)
    result = metric.compute(model, None, texts)
    ours = [-v for split in ("forget", "approximate")
            for v in result.documents[split]["mia_grad_all/gradient_norm"]]  # fmt: skip
    np.testing.assert_allclose(ours, GRADNORM["gradient_norm"], rtol=0, atol=1e-12)
    assert not model.training  # the model's mode is restored
    assert "all parameters, train mode" in metric.label("mia_grad_all/gradient_norm_auc")


def test_verdicts_name_k_and_the_gradients_scope():
    from lightning_unlearn.evaluation.mia import MembershipInference
    from lightning_unlearn.evaluation.mia_attacks import GradientNormMembership

    after = {f"mia/{s}_auc{x}": v for s in ("loss", "min_k", "min_k_plus_plus")
             for x, v in (("", 0.5), ("_low", 0.4), ("_high", 0.6))}  # fmt: skip
    after.update({f"mia_grad/gradient_norm_auc{x}": v for x, v in (("", 0.5), ("_low", 0.4),
                                                                  ("_high", 0.6))})  # fmt: skip
    lines = MembershipInference(k=0.4).verdict({"after": after})
    assert "mia min_k (k = 0.4) AUC 0.500, 95% interval [0.400, 0.600]" in lines
    assert "mia min_k_plus_plus (k = 0.4) AUC 0.500, 95% interval [0.400, 0.600]" in lines
    assert "mia loss AUC 0.500, 95% interval [0.400, 0.600]" in lines
    grad = GradientNormMembership().verdict({"after": after})
    assert grad == ["mia_grad gradient_norm (output layer, eval mode) AUC 0.500, 95% interval "
                    "[0.400, 0.600]"]  # fmt: skip
