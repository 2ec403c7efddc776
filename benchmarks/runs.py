"""What the benchmarks that unlearn share (not part of the library).

* :class:`Method`: one row of a benchmark's method table, as data: the class, its retain data,
  more constructor arguments, more data-module options and more workflow options. A benchmark's
  table is a tuple of them; adding a configuration is adding a row;
* :func:`unlearn`: one unlearning run of a row through the library's workflow, a diverged run
  caught and named;
* :func:`step_clock`: a callback timing each training step (data loading and evaluation left out).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import common


@dataclasses.dataclass(frozen=True)
class Method:
    """One unlearning configuration of a benchmark (a row of its method table).

    Attributes:
        name: the name on the command line, in the JSON and in the tables.
        class_name: a class of ``lightning_unlearn`` by its name, or the dotted class path of a
            method of your own (``planner.method_class`` resolves both).
        retain: the split its retain term trains on (``"retain"``: in-distribution,
            ``"general"``), or ``None``: no retain data.
        kwargs: more constructor arguments of the class.
        data: more options of the data module (e.g. a per-document mask).
        workflow: more options of :class:`~lightning_unlearn.workflow.UnlearningWorkflow`
            (``documents``: the keyword arguments of a
            :class:`~lightning_unlearn.evaluation.targets.DocumentTargeting`, made for each run).
        label: what the tables call it (default: ``name``).
        schedule: ``"target"`` (stop at the approximate-retrain target) or ``"epoch"`` (one epoch
            over the forget set), for the benchmarks that offer both.
    """

    name: str
    class_name: str
    retain: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    workflow: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: str = ""
    schedule: str = "target"

    @property
    def title(self) -> str:
        return self.label or self.name


def select(table: Sequence[Method], names: Sequence[str]) -> list[Method]:
    """The rows of ``table`` named, in that order; a dotted class path (a method of your own,
    outside the package) becomes a row of its own: in-distribution retain data when the class
    trains on retain batches, its defaults otherwise."""
    from lightning_unlearn.planner import method_needs

    rows = {m.name: m for m in table}
    out = []
    for name in names:
        if name in rows:
            out.append(rows[name])
        elif "." in name:
            try:
                needs = method_needs(name)
            except ValueError as err:
                raise SystemExit(str(err)) from None
            out.append(Method(name, name, "retain" if needs.uses_retain else None))
        else:
            raise SystemExit(
                f"unknown method {name!r}; choose from {list(rows)} or give the dotted class "
                "path of an UnlearningModule subclass"
            )
    return out


@dataclasses.dataclass
class Run:
    """One unlearning run: the trained module, its workflow and trainer, and what happened."""

    module: Any
    workflow: Any
    trainer: Any
    data: Any
    diverged: str | None
    seconds: float

    @property
    def steps(self) -> int:
        return int(self.trainer.global_step)

    @property
    def stopped_step(self) -> int | None:
        stop = self.workflow.stop
        return stop.stopped_step if stop is not None else None


def unlearn(
    method: Method,
    model_dir: str | Path,
    data: Callable[..., Any],
    *,
    lr: float,
    seed: int,
    workflow: Mapping[str, Any],
    trainer: Mapping[str, Any],
    before: Any = None,
    callbacks: Callable[[Any], Sequence[Any]] = lambda workflow: (),
    after: bool = True,
) -> Run:
    """Unlearn ``model_dir`` with ``method`` at a constant ``lr`` (AdamW, no warm-up).

    ``data(retain, **options)`` makes the data module (called after ``seed_everything(seed)``,
    with the row's retain split and data options); ``workflow`` and ``trainer`` are the
    benchmark's options of the workflow and of ``cpu_trainer`` (the row's workflow options win);
    ``callbacks(workflow)`` more trainer callbacks. With ``after`` the workflow runs whole
    (``UnlearningWorkflow.run``, nothing exported); without, it only begins and the trainer fits
    (the caller reads the workflow's measurements). A :class:`DivergenceError` ends the run and
    is named in :attr:`Run.diverged`.
    """
    import lightning as L

    from lightning_unlearn.demo import cpu_trainer
    from lightning_unlearn.evaluation.targets import DocumentTargeting
    from lightning_unlearn.methods import DivergenceError
    from lightning_unlearn.planner import method_class
    from lightning_unlearn.workflow import UnlearningWorkflow

    L.seed_everything(seed, verbose=False)
    datamodule = data(method.retain, **method.data)
    module = method_class(method.class_name)(
        str(model_dir),
        learning_rate=lr,
        warmup_ratio=0.0,
        scheduler="constant",
        **method.kwargs,
    )
    options = {"verbose": False, **workflow, **method.workflow}
    if isinstance(options.get("documents"), Mapping):  # per-document targets: fresh each run
        options["documents"] = DocumentTargeting(**options["documents"])
    flow = UnlearningWorkflow(**options)
    fit = cpu_trainer(**trainer, callbacks=[flow, *callbacks(flow)])
    if not after:
        flow.begin(fit, module, datamodule, before=before)
    started = time.perf_counter()
    diverged = None
    try:
        if after:
            flow.run(fit, module, datamodule, before=before, export=False)
        else:
            fit.fit(module, datamodule=datamodule)
    except DivergenceError as err:  # what the method made: scored or reported as it is
        diverged = str(err).split(";")[0]
    return Run(module, flow, fit, datamodule, diverged, time.perf_counter() - started)


def step_clock():
    """A callback timing each training step (``seconds``: their sum; ``times`` and ``tokens``:
    each step's seconds and real tokens)."""
    from lightning.pytorch import Callback

    class StepClock(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        @property
        def seconds(self) -> float:
            return sum(self.times)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t)
            self.tokens.append(common.count_tokens(batch)[0])

    return StepClock()
