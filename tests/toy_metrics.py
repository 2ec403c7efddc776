"""Three toy metrics defined outside the library, one of each kind the evaluation seam knows: the
tests pass them through the ``metrics:`` option and find them in every output."""

from __future__ import annotations

import torch

from lightning_unlearn.evaluation import GenerationMetric, MetricResult, ModelMetric, TokenMetric


class TokenCount(TokenMetric):
    """From the per-token statistics: target tokens and the best token log-probability per
    document; ``toytokens/{split}_tokens`` per split."""

    prefix = "toytokens"

    def compute(self, documents):
        result = MetricResult()
        for split, docs in documents.items():
            result.values[f"toytokens/{split}_tokens"] = float(docs.tokens)
            result.documents[split] = {
                "toytokens/tokens": [float(t.numel()) for t in docs.logprob],
                "toytokens/best": [float(t.max()) for t in docs.logprob],
            }
        return result


class FirstTokenEcho(GenerationMetric):
    """Generates: the share of documents whose greedy next token after the first 3 tokens equals
    the document's 4th token (``toygen/{split}_echo``), per document 1 or 0."""

    prefix = "toygen"
    splits = ("forget", "approximate")

    def compute(self, model, tokenizer, texts):
        result = MetricResult()
        for split, split_texts in texts.items():
            hits = []
            for ids in split_texts.input_ids:
                prompt = torch.tensor([ids[:3]])
                with torch.no_grad():
                    nxt = int(model(input_ids=prompt).logits[0, -1].argmax())
                hits.append(float(len(ids) > 3 and nxt == ids[3]))
            result.values[f"toygen/{split}_echo"] = sum(hits) / max(1, len(hits))
            result.documents[split] = {"toygen/echo": hits}
        return result


class LogprobGap(ModelMetric):
    """Needs a second model: per document the mean token log-probability under the evaluated
    model minus under the second one (``toyref/{split}_gap``: the mean over documents)."""

    prefix = "toyref"

    def compute(self, documents, other):
        result = MetricResult()
        if other is None:
            return result
        for split, docs in documents.items():
            gaps = [
                float(mine.double().mean() - theirs.double().mean())
                for mine, theirs in zip(docs.logprob, other[split].logprob)
            ]
            result.values[f"toyref/{split}_gap"] = sum(gaps) / len(gaps)
            result.documents[split] = {"toyref/gap": gaps}
        return result
