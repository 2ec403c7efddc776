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
``LIGHTNING_UNLEARN_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .io import OutputExistsError, check_output_dir
from .methods.base import DivergenceError, UnlearningModule

log = logging.getLogger("lightning_unlearn")

USAGE_ERROR = 2
EXTRA_VERBS = ("demo", "evaluate", "plan")


class UnlearnCLI(LightningCLI):
    """LightningCLI with the unlearning workflow around ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/run",
                            help="where the report and the unlearned model are written")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="replace an existing, non-empty output_dir")
        parser.add_argument("--export", type=bool, default=True,
                            help="save the unlearned model (safetensors) under output_dir/model")
        parser.add_argument("--stop_at_target", type=bool, default=True,
                            help="stop when forget perplexity reaches the original model's "
                                 "approximate-split perplexity (the paper's tuning guideline)")
        parser.add_argument("--target_tolerance", type=float, default=0.0,
                            help="stop once forget ppl >= target * (1 - tolerance)")
        parser.add_argument("--target_ppl", type=float | None, default=None,
                            help="explicit perplexity target; default: measured before unlearning")
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer")
        parser.link_arguments("model.init_args.gguf_file", "data.init_args.gguf_file")

    # ------------------------------------------------------------------ fit workflow
    def _opts(self) -> dict[str, Any]:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            opts = self._opts()
            out = Path(opts["output_dir"]).resolve()
            check_output_dir(out, overwrite=opts["overwrite"])
            log.info("output directory: %s", out)

    def instantiate_trainer(self, **kwargs: Any):
        if self.subcommand == "fit" and self._opts()["stop_at_target"]:
            from .evaluation import ApproximateRetrainStopping

            opts = self._opts()
            extra = kwargs.setdefault("callbacks", [])
            self.stopper = ApproximateRetrainStopping(
                target_ppl=opts["target_ppl"], tolerance=opts["target_tolerance"]
            )
            extra.append(self.stopper)
        else:
            self.stopper = None
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self._started = time.perf_counter()
        self._before = _first(self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False))

    def after_fit(self) -> None:
        from .evaluation import build_report, format_table, write_report

        trainer = self.trainer
        after = _first(trainer.validate(self.model, datamodule=self.datamodule, verbose=False))
        opts = self._opts()
        out = Path(opts["output_dir"])
        if opts["export"]:
            self.model.export(out / "model", overwrite=True)
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
                extra={"stopped_step": getattr(stopper, "stopped_step", None)},
            )
            paths = write_report(report, out, history=getattr(stopper, "history", None))
            print(format_table(report))
            print(f"report: {paths.get('json', out / 'report.json')}")


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
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if argv and argv[0] in EXTRA_VERBS:
            verb, rest = argv[0], argv[1:]
            if verb == "demo":
                from .demo import main as demo_main

                return int(demo_main(rest) or 0)
            if verb == "evaluate":
                from .evaluation.downstream import main_evaluate

                return int(main_evaluate(rest) or 0)
            from .planner import main as plan_main

            return int(plan_main(rest) or 0)
        run_lightning_cli(argv)
        return 0
    except SystemExit as exc:  # argparse / jsonargparse usage errors already printed
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else USAGE_ERROR)
        return code
    except (FileNotFoundError, OutputExistsError, ValueError, OSError, ImportError) as exc:
        if os.environ.get("LIGHTNING_UNLEARN_DEBUG"):
            raise
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except DivergenceError as exc:
        if os.environ.get("LIGHTNING_UNLEARN_DEBUG"):
            raise
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
