"""Tests of the installed package as other tools see it: the editable install is a path entry
that static checkers follow, it ships py.typed and demo.toml, and mypy from another directory
type-checks code using it (Literal strings included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

DIST = distribution("stableaudio-async")


def _package_dirs() -> list[Path]:
    """Where the installed distribution puts ``stableaudio_async``: the directories its .pth
    files name (an editable install), else site-packages itself."""
    files = DIST.files or []
    dirs = [Path(line.strip()) for file in files if file.name.endswith(".pth")
            for line in file.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "import "))]
    return dirs or [Path(str(DIST.locate_file("")))]


def test_the_package_ships_its_marker_and_demo_batch() -> None:
    """py.typed (PEP 561) and the demo batch are where the installed package is imported from."""
    dirs = [d for d in _package_dirs() if (d / "stableaudio_async").is_dir()]
    assert len(dirs) == 1
    package = dirs[0] / "stableaudio_async"
    assert (package / "py.typed").is_file()
    assert (package / "demo.toml").is_file()


def test_an_editable_install_is_a_plain_path_entry() -> None:
    """``pip install -e .`` adds a directory to sys.path in a .pth file, with no import hook
    (an import-hook finder is invisible to mypy)."""
    direct = DIST.read_text("direct_url.json")
    if direct is None or not json.loads(direct).get("dir_info", {}).get("editable"):
        pytest.skip("not an editable install")
    pth = [file for file in DIST.files or [] if file.name.endswith(".pth")]
    assert pth, "an editable install without a .pth file"
    for file in pth:
        assert not any(line.startswith("import ") for line in file.read_text().splitlines())


def test_mypy_in_another_directory_type_checks_code_using_the_package(tmp_path: Path) -> None:
    """mypy --strict run elsewhere finds the installed package, accepts a job's task and a
    result's status as enum or string, and refuses a misspelt provider or format."""
    (tmp_path / "uses.py").write_text(textwrap.dedent("""\
        from stableaudio_async import Job, JobResult, Task

        job = Job(provider="fal", prompt="rain", task="inpaint", output_format="wav")
        same = Job(provider="fal", prompt="rain", task=Task.INPAINT)
        result = JobResult(id="a", provider="fal", task="inpaint", status="completed")
        reveal_type(job.task)
        assert result.status == "completed" and job.task == Task.INPAINT
        Job(provider="fall", prompt="rain")
        Job(provider="fal", prompt="rain", output_format="aiff")
        """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), "uses.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    lines = done.stdout.splitlines()
    assert 'uses.py:6: note: Revealed type is "stableaudio_async.models.Task"' in lines, done.stdout
    errors = [line.split(":")[1] for line in lines if ": error:" in line]
    assert errors == ["8", "9"], done.stdout
