"""Command line: ``lightning-unlearn`` and ``python -m lightning_unlearn``.

Verbs:

* ``fit`` / ``validate`` / ``test``: a LightningCLI over :class:`UnlearningModule` subclasses
  (``--model.class_path lightning_unlearn.GradientAscentDescent`` or a config file) and the
  :class:`UnlearningDataModule`. ``fit`` measures the model before unlearning, stops at the
  approximate-retrain target (unless ``--stop_at_target false``), measures it after, writes the
  report and exports the unlearned model in Hugging Face format under ``--output_dir``.
* ``evaluate``: metrics of an existing checkpoint (per-split perplexity, membership inference, and
  lm-eval downstream tasks).
* ``demo``: the embedded end-to-end demo on SmolLM2-135M-Instruct, offline.
* ``plan``: memory plan for a model / method / strategy / GPU count.

Bad input ends with a one-paragraph message and exit code 2, never a traceback (set
``LIGHTNING_UNLEARN_DEBUG=1`` to see the traceback); a diverged run (non-finite loss or gradient,
forget NLL past ``max_forget_nll``) ends with exit code 1 and keeps its last good checkpoint.

Reliability of ``fit`` (``docs/reliability.md``): checkpoints go to ``<output_dir>/checkpoints``
(``last.ckpt`` at every epoch end, and every ``--checkpoint_every_n_steps`` steps), with the data
position and the seed; ``fit --ckpt_path last`` resumes an interrupted run in the same
``--output_dir``. The model and the report are written atomically. Every input is checked before
anything is written: an existing non-empty ``--output_dir`` is refused unless ``--overwrite``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .callbacks import FiniteModelCheckpoint, StepSeeding
from .configs import DEFAULT_MAX_BATCH_TOKENS, check_batch_budget, check_strategy
from .evaluation.base import UnlearningMetric
from .evaluation.metrics import default_metrics
from .evaluation.report import format_table, write_report
from .evaluation.targets import DocumentTargeting
from .io import OutputExistsError, check_output_dir
from .methods.base import DivergenceError, UnlearningModule
from .models import check_model_inputs, check_reference_config, load_config
from .workflow import UnlearningWorkflow

log = logging.getLogger("lightning_unlearn")

USAGE_ERROR = 2
EXTRA_VERBS = ("demo", "evaluate", "plan", "configs")


class UnlearnCLI(LightningCLI):
    """LightningCLI with the unlearning workflow around ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--output_dir",
            type=str,
            default="outputs/run",
            help="where the report and the unlearned model are written",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="replace an existing, non-empty output_dir",
        )
        parser.add_argument(
            "--export",
            type=bool,
            default=True,
            help="save the unlearned model (safetensors) under output_dir/model",
        )
        parser.add_argument(
            "--stop_at_target",
            type=bool,
            default=True,
            help="stop when forget perplexity reaches the original model's "
            "approximate-split perplexity (the paper's tuning guideline)",
        )
        parser.add_argument(
            "--target_tolerance",
            type=float,
            default=0.0,
            help="stop once forget ppl >= target * (1 - tolerance)",
        )
        parser.add_argument(
            "--target_ppl",
            type=float | None,
            default=None,
            help="explicit perplexity target; default: measured before unlearning",
        )
        parser.add_argument(
            "--score_cache",
            type=str | None,
            default="auto",
            help="folder keeping the before-measurement, keyed on the content of the model's "
            "weights, the evaluation data and the metrics: a second fit of the same model on the "
            "same data reuses it (the report says so). auto: 'scores' beside the data module's "
            "cache_dir; null: measure every time",
        )
        parser.add_argument(
            "--checks",
            type=str,
            default="adaptive",
            help="adaptive: with trainer.val_check_interval=1 a full forget check runs only when "
            "the training losses say the target may be reached (plus every --check_every steps); "
            "fixed: every validation the trainer schedules",
        )
        parser.add_argument(
            "--check_every",
            type=int,
            default=10,
            help="the adaptive checks' safety net: a full check at least every N steps",
        )
        parser.add_argument(
            "--targets",
            type=str,
            default="mean",
            help="mean: stop on the forget split's mean perplexity (the approximate-retrain "
            "target); documents: a target per forget document, its own stop, and each "
            "document's target in the report (lightning_unlearn.evaluation.DocumentTargeting; "
            "needed by DocumentTargetMatching)",
        )
        parser.add_argument(
            "--targets_reference",
            type=str | None,
            default=None,
            help="with --targets documents: a model that never saw the forget documents (the "
            "checkpoint before fine-tuning); null: quantile matching on the approximate split",
        )
        parser.add_argument(
            "--document_mask",
            type=bool,
            default=False,
            help="with --targets documents: forget documents at their target leave the forget "
            "term (any method)",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also write output_dir/checkpoints/last.ckpt every N optimizer "
            "steps (it is always written at epoch end); resume with "
            "--ckpt_path last",
        )
        parser.add_argument(
            "--max_batch_tokens",
            type=int | None,
            default=DEFAULT_MAX_BATCH_TOKENS,
            help="refuse a training step holding more tokens than this "
            "((batch_size + the retain batch) x max_length); "
            "null disables the check",
        )
        parser.add_argument(
            "--metrics",
            type=list[UnlearningMetric] | None,
            default=None,
            help="the metrics of the report (class_path / init_args list); default: "
            "lightning_unlearn.evaluation.default_metrics (perplexity, six membership attacks, "
            "memorisation, PrivLeak)",
        )
        parser.add_argument(
            "--mia_reference",
            type=str | None,
            default=None,
            help="a model that never saw the forget set: the reference-model membership attack "
            "of the default metrics (skipped without it)",
        )
        parser.add_argument(
            "--retrain_model",
            type=str | None,
            default=None,
            help="a model retrained without the forget set: PrivLeak's reference (default 0.5, "
            "right when the approximate split is matched to the forget set)",
        )
        # the data is tokenised with the model's tokenizer: model.tokenizer when set, else the model
        parser.link_arguments(
            ("model.init_args.model_name_or_path", "model.init_args.tokenizer"),
            "data.init_args.tokenizer",
            compute_fn=_tokenizer_of,
        )
        parser.link_arguments("model.init_args.gguf_file", "data.init_args.gguf_file")

    # ------------------------------------------------------------------ fit workflow
    def _opts(self) -> dict[str, Any]:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit":
            return
        opts = self._opts()
        out = Path(opts["output_dir"]).resolve()
        resuming = opts.get("ckpt_path") is not None
        if resuming and (out / "report.json").exists() and not opts["overwrite"]:
            raise OutputExistsError(
                f"output directory '{out}' holds a finished run (report.json); resuming it would "
                "replace its results: pass --overwrite or choose another --output_dir"
            )
        if not resuming:
            check_output_dir(out, overwrite=opts["overwrite"])
        trainer = opts["trainer"]
        check_strategy(trainer.get("strategy"))
        if trainer.get("default_root_dir") is None:
            trainer["default_root_dir"] = str(out)  # logs and the saved config go with the run
        if opts["max_batch_tokens"] is not None and opts["max_batch_tokens"] < 1:
            raise ValueError(
                f"--max_batch_tokens must be >= 1 or null, got {opts['max_batch_tokens']}"
            )
        every = opts["checkpoint_every_n_steps"]
        if every is not None and every < 1:
            raise ValueError(f"--checkpoint_every_n_steps must be >= 1 or null, got {every}")
        self.paths = _resolved_paths(opts, out)
        for key, value in self.paths.items():
            log.debug("path %s: %s", key, value)

    def instantiate_trainer(self, **kwargs: Any):
        self.workflow = None
        if self.subcommand == "fit":
            opts = self._opts()
            # kwargs replace the trainer config's keys: keep the callbacks the config lists
            configured = self._get(self.config_init, "trainer", default={}).get("callbacks")
            if configured is None:
                configured = []
            extra = kwargs.setdefault(
                "callbacks", list(configured) if isinstance(configured, list) else [configured]
            )
            extra.append(StepSeeding())  # the seed seed_everything set, saved in checkpoints
            if opts["trainer"].get("enable_checkpointing") is not False:
                extra.append(
                    FiniteModelCheckpoint(
                        dirpath=str(Path(opts["output_dir"]).resolve() / "checkpoints"),
                        save_last=True,
                        save_top_k=0,
                        every_n_train_steps=opts["checkpoint_every_n_steps"],
                    )
                )
            self.workflow = UnlearningWorkflow(
                metrics=self._get(self.config_init, "metrics", default=None)
                or default_metrics(reference=opts["mia_reference"], retrain=opts["retrain_model"]),
                stop_at_target=opts["stop_at_target"],
                target_ppl=opts["target_ppl"],
                tolerance=opts["target_tolerance"],
                checks=opts["checks"],
                check_every=opts["check_every"],
                documents=_document_targeting(opts),
            )
            extra.append(self.workflow)
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self._check_budget()
        self._check_model_and_data()
        self.workflow.score_cache = self._score_cache()
        self.workflow.begin(self.trainer, self.model, self.datamodule)

    def _score_cache(self) -> Path | None:
        """``--score_cache``: ``auto`` is ``scores`` beside the data module's tokenised cache."""
        value = self._opts()["score_cache"]
        if value is None or str(value).lower() in ("none", "null", ""):
            return None
        if value != "auto":
            return Path(value)
        from .data.cache import default_cache_dir

        root = getattr(self.datamodule, "cache_dir", None) or default_cache_dir()
        return Path(root).expanduser().parent / "scores"

    def _check_budget(self) -> None:
        """The tokens one training step holds, from the instantiated method's configuration (does
        this method with this retain term train on retain batches?) and the data module's."""
        data = self.datamodule
        with_retain = "retain" in getattr(data, "train_sources", {}) and self.model.uses_retain
        check_batch_budget(
            batch_size=int(getattr(data, "batch_size", 4)),
            max_length=int(getattr(data, "max_length", 512)),
            retain_per_forget=int(getattr(data, "retain_per_forget", 1)),
            retain_batch_size=getattr(data, "retain_batch_size", None),
            with_retain=with_retain,
            max_batch_tokens=self._opts()["max_batch_tokens"],
        )

    def _check_model_and_data(self) -> None:
        """Everything that can be checked before the first byte is written: data files, the
        tokenizer and max_length against the model's config, the reference model."""
        module, data = self.model, self.datamodule
        config = load_config(
            module.model_name_or_path,
            gguf_file=module.gguf_file,
            trust_remote_code=module.trust_remote_code,
        )
        check_model_inputs(
            config,
            model=module.model_name_or_path,
            tokenizer=getattr(data, "tokenizer", None),
            tokenizer_name=getattr(data, "tokenizer_name_or_path", None),
            max_length=getattr(data, "max_length", None),
        )
        reference = getattr(module, "reference_model_name_or_path", None)
        if reference is not None and module.needs_reference:
            check_reference_config(
                config,
                load_config(reference, trust_remote_code=module.trust_remote_code),
                model=module.model_name_or_path,
                reference_name=reference,
            )
        data.setup("fit")  # reads and tokenises every split: missing/empty/corrupt files fail here

    def after_fit(self) -> None:
        opts = self._opts()
        out = Path(opts["output_dir"])
        report = self.workflow.finish(
            self.trainer,
            self.model,
            self.datamodule,
            output_dir=out,
            export=opts["export"],
            extra={"paths": getattr(self, "paths", {})},
        )
        if self.trainer.is_global_zero:
            print(format_table(report))
            print(f"report: {out / 'report.json'}")


def _tokenizer_of(model_name_or_path: str, tokenizer: str | None) -> str:
    return tokenizer or model_name_or_path


def _init_args(node: Any) -> dict[str, Any]:
    """``init_args`` of a subclass-mode config node as a plain dict."""
    if node is None:
        return {}
    args = node.get("init_args") if hasattr(node, "get") else getattr(node, "init_args", None)
    if args is None:
        return {}
    return (
        dict(vars(args)) if hasattr(args, "__dict__") and not isinstance(args, dict) else dict(args)
    )


def _resolve(value: Any) -> str | None:
    if isinstance(value, str) and os.path.exists(os.path.expanduser(value)):
        return str(Path(value).expanduser().resolve())
    return value if isinstance(value, str) else None


def _resolved_paths(opts: Any, out: Path) -> dict[str, str]:
    """Absolute forms of every local path of the run (model, reference, data, checkpoint)."""
    paths: dict[str, str] = {"output_dir": str(out)}
    model = _init_args(opts.get("model"))
    for key in ("model_name_or_path", "reference_model_name_or_path", "tokenizer"):
        if (value := _resolve(model.get(key))) is not None:
            paths[key] = value
    data = _init_args(opts.get("data"))
    for key in (
        "forget",
        "retain",
        "approximate",
        "eval_forget",
        "eval_retain",
        "general",
        "cache_dir",
    ):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            value = value.get("path") if hasattr(value, "get") else getattr(value, "path", None)
        if (resolved := _resolve(value)) is not None:
            paths[f"data.{key}"] = resolved
    if (ckpt := opts.get("ckpt_path")) is not None:
        paths["ckpt_path"] = _resolve(ckpt) or str(ckpt)
    return paths


def run_lightning_cli(args: list[str] | None = None) -> UnlearnCLI:
    from .data import UnlearningDataModule

    return UnlearnCLI(
        UnlearningModule,
        UnlearningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


# ----------------------------------------------------------------------------------- evaluate

#: ``evaluate``'s own options: (flag, type, default, help)
EVALUATE_OPTIONS: tuple[tuple[str, Any, Any, str | None], ...] = (
    ("--gguf_file", str | None, None, "GGUF file name inside --model when it is a folder"),
    ("--compare", str | None, None,
     "a second checkpoint (the original model): the report's 'before' column, and the "
     "approximate-retrain target"),
    ("--metrics", list[UnlearningMetric] | None, None,
     "the report's metrics (class_path / init_args list)"),
    ("--mia_reference", str | None, None,
     "a model that never saw the forget set (reference-model attack)"),
    ("--retrain_model", str | None, None, "a model retrained without the forget set (PrivLeak)"),
    ("--target_ppl", float | None, None, "explicit approximate-retrain target perplexity"),
    ("--output_dir", str, "outputs/evaluate", "where report.json / report.md are written"),
    ("--overwrite", bool, False, "replace an existing, non-empty output_dir"),
    ("--tasks", str | None, None, "comma-separated lm-eval tasks, e.g. mmlu,arc_easy"),
    ("--include_path", str | None, None, "folder with extra lm-eval task YAML files"),
    ("--limit", float | None, None, "lm-eval documents per task (int) or fraction (<1)"),
    ("--num_fewshot", int | None, None, None),
    ("--batch_size", str, "1", "lm-eval batch size or auto"),
    ("--device", str, "cpu", "lm-eval device"),
    ("--dtype", str | None, None, "lm-eval weight dtype"),
    ("--output", str | None, None, "also write the lm-eval results as JSON to this file"),
    ("--attacks", str | None, None,
     "comma-separated: relearn, quantize (does the forgetting last?)"),
    ("--relearn_steps", str, "1,2,4,8",
     "relearning steps scored (one training run, scored at each)"),
    ("--relearn_data", str, "retain,forget_slice",
     "what relearning trains on: retain, general, forget_slice"),
    ("--relearn_lr", float, 1e-5, "relearning AdamW rate"),
    ("--slice_fraction", float, 0.25,
     "share of the forget documents relearned on (the rest is scored)"),
    ("--bits", str, "8,4", "quantization bit widths"),
    ("--group_size", int, 64, "input weights per quantization scale"),
)  # fmt: skip


def build_evaluate_parser() -> LightningArgumentParser:
    """Arguments of ``lightning-unlearn evaluate``: the data options and configs of ``fit``."""
    from jsonargparse import ActionConfigFile
    from lightning.pytorch import Trainer

    from .data import UnlearningDataModule

    parser = LightningArgumentParser(
        prog="lightning-unlearn evaluate",
        description="The unlearning report of any checkpoint (a local folder, a hub id or a GGUF "
        "file) on forget / approximate / retain / general data, with --compare for the original "
        "model side by side; lm-eval tasks with --tasks.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML with data: / trainer:")
    parser.add_argument("--model", type=str, required=True, help="the checkpoint to evaluate")
    for flag, kind, default, text in EVALUATE_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_subclass_arguments(UnlearningDataModule, "data", required=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.link_arguments("model", "data.init_args.tokenizer")
    parser.link_arguments("gguf_file", "data.init_args.gguf_file")
    return parser


def evaluate_main(argv: list[str]) -> dict[str, Any]:
    """``lightning-unlearn evaluate``: the unlearning report of a checkpoint (and lm-eval tasks)."""
    import lightning as L

    parser = build_evaluate_parser()
    cfg = parser.parse_args(argv)
    has_data = cfg.get("data") is not None
    if not has_data and not cfg.tasks:
        parser.error("give evaluation data (--config <data yaml> or --data.*) and/or --tasks")
    out = Path(cfg.output_dir).resolve()
    check_output_dir(out, overwrite=cfg.overwrite)
    check_strategy(cfg.trainer.get("strategy") if cfg.get("trainer") else None)
    init = parser.instantiate_classes(cfg)
    results: dict[str, Any] = {}
    if has_data:
        results = _evaluate_report(init, cfg, out, L)
    if cfg.tasks:
        from .evaluation.downstream import evaluate_options

        downstream = evaluate_options(cfg)
        results["downstream"] = downstream
        from .io import atomic_write_json

        atomic_write_json(out / "downstream.json", downstream)
        if cfg.output:
            atomic_write_json(cfg.output, downstream)
        if not has_data:
            import json

            sys.stdout.write(json.dumps(downstream, indent=2, default=str) + "\n")
    return results


def _evaluate_report(init: Any, cfg: Any, out: Path, L: Any) -> dict[str, Any]:
    """The unlearning report of ``--model`` (``after``) against ``--compare`` (``before``)."""
    data = init.data
    attacks = _attack_settings(cfg) if cfg.attacks else []  # bad attack options fail first
    module = UnlearningModule(cfg.model, gguf_file=cfg.gguf_file)
    config = load_config(cfg.model, gguf_file=cfg.gguf_file)
    check_model_inputs(
        config,
        model=cfg.model,
        tokenizer=data.tokenizer,
        tokenizer_name=data.tokenizer_name_or_path,
        max_length=data.max_length,
    )
    data.setup("validate")  # missing / empty / corrupt data files fail here, before any output
    if cfg.compare is not None:
        check_reference_config(
            config, load_config(cfg.compare), model=cfg.model, reference_name=cfg.compare
        )
    trainer_args = {
        **dict(cfg.trainer),
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    trainer_args = {k: v for k, v in trainer_args.items() if k in _TRAINER_KEYS}
    trainer = L.Trainer(**trainer_args)
    metrics = init.get("metrics") or default_metrics(
        reference=cfg.mia_reference, retrain=cfg.retrain_model
    )
    workflow = UnlearningWorkflow(metrics=metrics, stop_at_target=False, target_ppl=cfg.target_ppl)
    after = workflow.measure(trainer, module, data)
    # the original model, when given: the 'before' column and the target; else the model itself
    before = (
        after
        if cfg.compare is None
        else workflow.measure(trainer, UnlearningModule(cfg.compare), data)
    )
    report = workflow.report(
        model=cfg.model,
        method="evaluate",
        steps=0,
        seconds=0.0,
        before=before,
        after=after,
        extra={"compare": cfg.compare},
    )
    if attacks:
        _attack(report, cfg, attacks, workflow, module, data)
    if trainer.is_global_zero:
        from .io import staged_outputs

        with staged_outputs(out) as staging:
            write_report(report, staging)
        print(format_table(report))
        print(f"report: {out / 'report.json'}")
    return report


def _attack_settings(cfg: Any) -> list[Any]:
    """The attacks ``--attacks`` names, with their options (bad names and values named)."""
    from .attacks import QuantizeAttack, RelearnAttack

    def numbers(option: str, kind=int) -> tuple:
        try:
            return tuple(kind(v) for v in str(getattr(cfg, option)).split(",") if v.strip())
        except ValueError:
            raise ValueError(
                f"--{option} must be comma-separated numbers, got {getattr(cfg, option)!r}"
            ) from None

    out = []
    for name in [a.strip() for a in cfg.attacks.split(",") if a.strip()]:
        if name == "relearn":
            for data in [d.strip() for d in cfg.relearn_data.split(",") if d.strip()]:
                out.append(
                    RelearnAttack(
                        steps=numbers("relearn_steps"),
                        data=data,
                        slice_fraction=cfg.slice_fraction,
                        learning_rate=cfg.relearn_lr,
                    )
                )
        elif name == "quantize":
            out.append(QuantizeAttack(bits=numbers("bits"), group_size=cfg.group_size))
        else:
            raise ValueError(f"unknown attack {name!r} in --attacks; use relearn, quantize")
    return out


def _attack(report: dict, cfg: Any, attacks: list, workflow: Any, module: Any, data: Any) -> None:
    """Run ``--attacks`` on the evaluated model, ``--compare`` (B) and ``--retrain_model`` (R)
    and add their section and verdict to the report."""
    from .attacks import attack_section, attack_verdicts, run_attacks

    module.configure_model()
    section = run_attacks(
        workflow,
        attacks,
        data,
        unlearned=module.model,
        before=cfg.compare,
        retrain=cfg.retrain_model,
        progress=lambda line: log.info(line),
    )
    report["attacks"] = section
    report["verdict"] = [*report["verdict"], *attack_verdicts(section)]
    report["sections"] = [*report.get("sections", []), attack_section(section)]


#: Trainer options ``evaluate`` passes on (device placement; the loops are its own)
_TRAINER_KEYS = (
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "precision",
    "logger",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "default_root_dir",
)


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    try:
        if argv and argv[0] in EXTRA_VERBS:
            verb, rest = argv[0], argv[1:]
            if verb == "demo":
                from .demo import main as demo_main

                return int(demo_main(rest) or 0)
            if verb == "evaluate":
                evaluate_main(rest)
                return 0
            if verb == "configs":
                from .configs import main as configs_main

                return int(configs_main(rest) or 0)
            from .planner import main as plan_main

            return int(plan_main(rest) or 0)
        run_lightning_cli(argv if explicit else None)
        return 0
    except SystemExit as exc:  # argparse / jsonargparse usage errors already printed
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else USAGE_ERROR)
        return code
    except (
        FileNotFoundError,
        OutputExistsError,
        ValueError,
        OSError,
        ImportError,
        MisconfigurationException,
    ) as exc:
        if os.environ.get("LIGHTNING_UNLEARN_DEBUG"):
            raise
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except DivergenceError as exc:
        if os.environ.get("LIGHTNING_UNLEARN_DEBUG"):
            raise
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (``main`` may run many times in-process)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's tips for cloud services (printed on every run, whatever the logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        if not root.handlers:
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisement) for f in target.filters):
            target.addFilter(_NoAdvertisement())
    # Lightning's own use of a torch API it deprecated, once per validation: not the user's concern
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():  # DeepSpeed would warn that it fell back to the CPU
            os.environ["DS_ACCELERATOR"] = "cpu"


def _describe(exc: BaseException) -> str:
    """The message of an input error, one sentence where one says it all.

    jsonargparse wraps a method's own ``ValueError`` (``learning_rate must be > 0, got -1``) in a
    report of every ``Union`` alternative it tried and the whole parsed namespace; the sentence
    that names the input is the one error that is not about the ``None`` alternative.
    """
    text = str(exc).strip()
    if "Does not validate against any of the Union subtypes" in text:
        reasons = [
            line.strip()[2:].strip()
            for line in text.splitlines()
            if line.strip().startswith("- ") and "NoneType" not in line
        ]
        if reasons:
            return reasons[0]
    return text or type(exc).__name__


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()


def _document_targeting(opts: Any) -> DocumentTargeting | None:
    """``--targets documents`` (with ``--targets_reference`` and ``--document_mask``)."""
    if opts["targets"] not in ("mean", "documents"):
        raise ValueError(f"--targets must be 'mean' or 'documents', got {opts['targets']!r}")
    if opts["targets"] == "mean":
        if opts["targets_reference"] is not None or opts["document_mask"]:
            raise ValueError(
                "--targets_reference and --document_mask are options of per-document targets: "
                "add --targets documents"
            )
        return None
    return DocumentTargeting(reference=opts["targets_reference"], mask=opts["document_mask"])
