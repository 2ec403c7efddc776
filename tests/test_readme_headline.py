"""README's headline figures are the rendered sections' (#26): the paragraph between the headline
markers is what ``benchmarks/headline.py`` makes from the stored results, and every figure in it
appears in the competition and robustness sections of ``docs/results.md``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import headline  # noqa: E402


def _block(text: str) -> str:
    return text.split(headline.START, 1)[1].split(headline.END, 1)[0].strip()


def _section(text: str, marker: str) -> str:
    return text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]


def test_readme_headline_is_the_stored_results_paragraph():
    readme = (ROOT / "README.md").read_text()
    assert _block(readme) == headline.render().strip(), (
        "README.md's headline differs from the stored results: run python benchmarks/headline.py"
    )


def test_every_headline_figure_is_in_the_rendered_sections():
    readme = _block((ROOT / "README.md").read_text())
    results = (ROOT / "docs" / "results.md").read_text()
    competition, robustness = readme.split("\n\n", 1)
    figures = {
        "forgetting_quality": re.findall(r"(?<![\w.])-?\d+\.\d{2,3}(?![\d%])", competition),
        "robustness": re.findall(r"(?<![\w.])-?\d+\.\d{2}(?![\d%])", robustness),
    }
    assert len(figures["forgetting_quality"]) >= 6 and len(figures["robustness"]) >= 3
    for marker, values in figures.items():
        section = _section(results, marker)
        missing = [v for v in values if v not in section]
        assert not missing, f"{missing} of README's headline are not in the {marker} section"
    # the stamps: each paragraph's commit is its section's
    for marker, paragraph in (("forgetting_quality", competition), ("robustness", robustness)):
        commits = re.findall(r"`([0-9a-f]{7,40}(?:\+dirty)?)`", paragraph)
        assert commits and all(f"`{c}`" in _section(results, marker) for c in commits), marker
