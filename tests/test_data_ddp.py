"""UnlearningDataModule under a real 2-process DDP run on CPU (gloo), and inside Trainer.fit."""

from __future__ import annotations

import json
import sys

import lightning as L
import pytest
import torch
from conftest import TINY_CORPUS, write_jsonl

from lightning_unlearn import GradientAscentDescent
from lightning_unlearn.data import UnlearningDataModule


class _Recorder(L.LightningModule):
    """Records which windows each rank trains and evaluates on."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = {"forget": [], "retain": [], "eval": {}, "steps": 0}

    def on_train_start(self):
        sampler = self.trainer.train_dataloader["forget"].sampler
        self.seen["sampler"] = [type(sampler).__name__, sampler.seed, sampler.rank]

    def training_step(self, batch, batch_idx):
        for part in ("forget", "retain"):
            b = batch[part]
            for ids, mask in zip(b["input_ids"], b["attention_mask"]):
                self.seen[part].append(ids[mask.bool()].tolist())
        self.seen["steps"] += 1
        return (self.weight * batch["forget"]["input_ids"].float().mean()).sum()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen["eval"].setdefault(batch["split"], []).extend(batch["doc_index"].tolist())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self):
        path = f"{self.out_dir}/rank{self.global_rank}.json"
        with open(path, "w") as fh:
            json.dump(self.seen, fh)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="fork-based DDP test")
def test_ddp_two_processes_see_disjoint_shards(tiny_model_dir, tmp_path):
    data = {
        "forget": str(write_jsonl(tmp_path / "f.jsonl", TINY_CORPUS["forget"])),
        "retain": str(write_jsonl(tmp_path / "r.jsonl", TINY_CORPUS["retain"])),
        "approximate": str(write_jsonl(tmp_path / "a.jsonl", TINY_CORPUS["approximate"][:3])),
    }
    dm = UnlearningDataModule(
        str(tiny_model_dir),
        **data,
        max_length=256,
        batch_size=2,
        seed=5,
        cache_dir=str(tmp_path / "c"),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Recorder(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    dm.setup("fit")
    forget = {tuple(x) for x in dm.train_dataset("forget")["input_ids"]}
    assert len(forget) == 8
    a, b = ({tuple(x) for x in r["forget"]} for r in ranks)
    assert not a & b and a | b == forget  # disjoint, and together the whole forget set
    # our own sampler, not one Lightning injected (that one would have seed 0)
    assert [r["sampler"] for r in ranks] == [
        ["ResumableDistributedSampler", 5, 0],
        ["ResumableDistributedSampler", 5, 1],
    ]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2  # 4 windows per rank, batch size 2
    assert not {tuple(x) for x in ranks[0]["retain"]} & {tuple(x) for x in ranks[1]["retain"]}
    for split in dm.eval_split_names:
        ids = ranks[0]["eval"][split] + ranks[1]["eval"][split]
        assert sorted(ids) == list(range(len(dm.eval_dataset(split)))), split


def test_fit_one_epoch_with_an_unlearning_method(tiny_model_dir, tiny_corpus_dir, tmp_path):
    dm = UnlearningDataModule(
        str(tiny_model_dir),
        forget=str(tiny_corpus_dir / "forget.jsonl"),
        retain=str(tiny_corpus_dir / "retain.jsonl"),
        approximate=str(tiny_corpus_dir / "approximate.jsonl"),
        general=str(tiny_corpus_dir / "general.jsonl"),
        max_length=24,
        batch_size=3,
        retain_per_forget=2,
        cache_dir=str(tmp_path / "c"),
    )
    module = GradientAscentDescent(str(tiny_model_dir), learning_rate=1e-3, warmup_ratio=0.0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    windows = len(dm.train_dataset("forget"))
    assert trainer.global_step == -(-windows // 3)  # one pass over the forget set
    metrics = trainer.callback_metrics
    for split in ("forget", "approximate", "retain", "general"):  # every named split measured
        ppl = metrics[f"val/{split}/ppl"]
        assert torch.isfinite(ppl) and ppl > 1, split
