import nbformat as nbf

nb = nbf.v4.new_notebook()
md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell
cells = [
md("""# lightning-unlearn quick start

A walk-through on a **tiny random-initialised model** so it runs anywhere in under a minute
(no download, CPU only). The same code runs a 7B model on a GPU cluster: change the model path and
the trainer.

1. build a tiny model and a small corpus of *forget*, *retain*, *approximate* (unseen) and *general* text;
2. teach the model the forget and retain text (continued pre-training), so there is something to forget;
3. subclass a method with our own `forget_loss`;
4. unlearn until the forget perplexity reaches the approximate-retrain target;
5. read the report."""),
code("""import json, tempfile
from pathlib import Path

import lightning as L
import torch

from lightning_unlearn import UnlearningModule, UnlearningWorkflow
from lightning_unlearn.data import UnlearningDataModule
from lightning_unlearn.evaluation import format_table
from lightning_unlearn.losses import token_nll
from lightning_unlearn.pretraining import ContinuedPretraining
from lightning_unlearn.testing import build_tiny_model

torch.set_num_threads(2)
import logging, warnings
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore")
L.seed_everything(0, verbose=False)
work = Path(tempfile.mkdtemp(prefix="unlearn-quickstart-"))
model_dir = build_tiny_model(work / "tiny-llama")   # ~70k parameters, byte-level BPE tokenizer
print(model_dir)"""),
md("## 1. A small corpus, one JSON line per document"),
code("""def write(name, texts):
    path = work / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    return str(path)

forget = [f"def secret_{i}(x):\\n    return x * {i} + {i * i}\\n" for i in range(12)]
retain = [f"def public_{i}(items):\\n    return [item + {i} for item in items]\\n" for i in range(12)]
approximate = [f"def unseen_{i}(y):\\n    return y * {i + 40} + {i + 7}\\n" for i in range(12)]
general = [f"The river number {i} flows to the sea through the valley." for i in range(8)]
paths = {name: write(name, texts) for name, texts in
         dict(forget=forget, retain=retain, approximate=approximate, general=general,
              seen=forget + retain).items()}"""),
md("""## 2. Teach the model the forget and retain text

A real model has seen its forget set in pre-training. Our tiny model has seen nothing, so we train
it on forget + retain first. The *approximate* split stays unseen: its perplexity is what the
forget set's should become (the approximate-retrain target of Yao et al., ACL 2024)."""),
code("""def data(train):
    return UnlearningDataModule(str(model_dir), forget=train, retain=paths["retain"],
                                eval_forget=paths["forget"], approximate=paths["approximate"],
                                general=paths["general"], max_length=32, batch_size=8,
                                cache_dir=str(work / "cache"))

def trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=False, **kw)

teacher = ContinuedPretraining(str(model_dir), learning_rate=1.5e-2, warmup_ratio=0.0, scheduler="constant")
trainer(max_epochs=15, limit_val_batches=0).fit(teacher, data(paths["seen"]))
teacher.export(work / "seen")"""),
md("""## 3. A method of our own: override one function

Every method is a `LightningModule` subclass of `UnlearningModule`; the shared `training_step` calls
`forget_loss` and, when the `retain_term` hyper-parameter is not `"none"`, the base's retain term
(`"nll"`: gradient descent on retain data; `"kl"`: KL to the original model), weights and logs them.
Here: gradient ascent whose per-batch ascent is capped, with the NLL retain term."""),
code("""class CappedAscent(UnlearningModule):
    def forget_loss(self, batch):
        return -token_nll(self(batch), batch["labels"]).clamp(max=8.0)"""),
md("""## 4. Unlearn through the workflow

`UnlearningWorkflow` measures the model before (every split), fixes the approximate-retrain target,
checks the forget split during training, stops at the target, measures after and writes the report
(the same code `lightning-unlearn fit`, the demo and the benchmarks run)."""),
code("""module = CappedAscent(str(work / "seen"), retain_term="nll", learning_rate=5e-4,
                      warmup_ratio=0.0, scheduler="constant")
workflow = UnlearningWorkflow()
t = trainer(max_steps=80, max_epochs=-1, val_check_interval=2, check_val_every_n_epoch=None,
            num_sanity_val_steps=0, callbacks=[workflow])
report = workflow.run(t, module, data(paths["forget"]), output_dir=work / "report", export=False)
print("target", round(report["target_ppl"], 3), "stopped at step", report["stopped_step"])"""),
md("## 5. The report"),
code("""print(format_table(report))
assert report["after"]["forget/ppl"] > report["before"]["forget/ppl"]"""),
code("""from IPython.display import Image
Image(filename=str(work / "report" / "perplexity.png"))"""),
md("""The unlearned model is a plain Hugging Face checkpoint: `module.export("out/model")` and load it
with `AutoModelForCausalLM.from_pretrained`, vLLM or lm-eval. From the command line the same run is
`lightning-unlearn fit --config ...`; see `configs/`."""),
]
nb["cells"] = cells
nb["metadata"] = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}}
nbf.write(nb, "notebooks/quickstart.ipynb")
