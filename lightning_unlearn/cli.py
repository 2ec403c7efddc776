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
import time
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .callbacks import FiniteModelCheckpoint, StepSeeding
from .configs import DEFAULT_MAX_BATCH_TOKENS, check_batch_budget, check_strategy
from .io import OutputExistsError, check_output_dir, staged_outputs
from .methods.base import DivergenceError, UnlearningModule
from .models import check_model_inputs, check_reference_config, load_config

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
            "(batch_size x max_length x (1 + retain_per_forget)); "
            "null disables the check",
        )
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer")
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
        self.stopper = None
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
            if opts["stop_at_target"]:
                from .evaluation import ApproximateRetrainStopping

                self.stopper = ApproximateRetrainStopping(
                    target_ppl=opts["target_ppl"], tolerance=opts["target_tolerance"]
                )
                extra.append(self.stopper)
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self._check_budget()
        self._check_model_and_data()
        self._started = time.perf_counter()
        self._before = _first(
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        )

    def _check_budget(self) -> None:
        """The tokens one training step holds, from the instantiated method's configuration (does
        this method with this retain term train on retain batches?) and the data module's."""
        data = self.datamodule
        with_retain = "retain" in getattr(data, "train_sources", {}) and self.model.uses_retain
        check_batch_budget(
            batch_size=int(getattr(data, "batch_size", 4)),
            max_length=int(getattr(data, "max_length", 512)),
            retain_per_forget=int(getattr(data, "retain_per_forget", 1)),
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
        trainer = self.trainer
        after = _first(trainer.validate(self.model, datamodule=self.datamodule, verbose=False))
        opts = self._opts()
        out = Path(opts["output_dir"])
        with staged_outputs(out) as staging:
            self._publish(trainer, opts, after, staging, out)

    def _publish(self, trainer, opts, after, staging: Path, out: Path) -> None:
        from .evaluation import build_report, format_table, write_report

        if opts["export"]:
            self.model.export(staging / "model", overwrite=True)
        if trainer.is_global_zero:
            stopper = self.stopper
            target = opts["target_ppl"]
            if target is None and stopper is not None:
                target = stopper.target_ppl
            if target is None:
                target = self._before.get("val/approximate/ppl")
            report = build_report(
                model=self.model.model_name_or_path,
                method=type(self.model).__name__,
                steps=int(trainer.global_step),
                seconds=time.perf_counter() - self._started,
                before=self._before,
                after=after,
                target_ppl=target,
                history=getattr(stopper, "history", None),
                extra={
                    "stopped_step": getattr(stopper, "stopped_step", None),
                    "paths": getattr(self, "paths", {}),
                },
            )
            write_report(report, staging, history=getattr(stopper, "history", None))
            print(format_table(report))
            print(f"report: {out / 'report.json'}")


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


def _first(results: list[dict[str, float]] | None) -> dict[str, float]:
    merged: dict[str, float] = {}
    for entry in results or []:
        for key, value in entry.items():
            merged[key.split("/dataloader_idx_")[0]] = float(value)
    return merged


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
                from .evaluation.downstream import main_evaluate

                return int(main_evaluate(rest) or 0)
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
