"""A non-editable install works from any directory: schemas and templates ship in the wheel.

This is the "done when" of the gate: the canonical examples validate unchanged from an
installed package, run from another directory. pip reaches PyPI for the dependencies; its
cache makes a second run fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install <checkout>` (not editable); returns its bin directory."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    done = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return bin_dir


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(PYTHONUTF8="1", XDG_CACHE_HOME=str(cwd / "cache"), XDG_STATE_HOME=str(cwd / "state"))
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout, with nothing in it."""
    return tmp_path


def test_the_package_is_the_installed_one(installed: Path, elsewhere: Path) -> None:
    probe = (
        "import json, provisioner, provisioner.resources as r; "
        "print(json.dumps([provisioner.__file__, str(r.shipped('templates')), "
        "str(r.shipped('schemas'))]))"
    )
    done = run(installed, elsewhere, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    package, templates, schemas = (Path(p) for p in json.loads(done.stdout))
    venv = installed.parent
    assert package.is_relative_to(venv), "the checkout was imported, not the installed package"
    assert templates == package.parent / "_shipped" / "templates"
    assert (templates / "overview" / "overview.txt.j2").is_file()
    assert (schemas / "quality.schema.json").is_file()
    assert (package.parent / "labels.yaml").is_file()
    assert (package.parent / "catalogue.yaml").is_file()


def test_validate_the_examples(installed: Path, elsewhere: Path) -> None:
    done = run(installed, elsewhere, "provisioner", "validate", str(EXAMPLES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 declarations checked: valid" in done.stdout


def test_show(installed: Path, elsewhere: Path) -> None:
    done = run(
        installed, elsewhere, "provisioner", "show", str(EXAMPLES / "qualities" / "0403170701.yaml")
    )
    assert done.returncode == 0, done.stderr
    assert "Overzicht van de configuratiegegevens" in done.stdout
    assert "Vervaldatum                        : 26/03/2031" in done.stdout
    done = run(
        installed,
        elsewhere,
        "provisioner",
        "show",
        "secsocexemple01",
        "--declarations",
        str(EXAMPLES),
        "--lang",
        "en",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["contact"]["language_name"] == "French"


def test_codeowners_and_schema(installed: Path, elsewhere: Path) -> None:
    done = run(installed, elsewhere, "provisioner", "codeowners", str(EXAMPLES))
    assert done.returncode == 0, done.stderr
    assert "/examples/qualities/0403170701.yaml dieter.expedito@onderneming.example" in (
        done.stdout.splitlines()
    )
    done = run(installed, elsewhere, "provisioner", "schema")
    assert done.returncode == 0, done.stderr
    written = elsewhere / "schemas" / "quality.schema.json"
    assert json.loads(written.read_text()) == json.loads(
        (ROOT / "schemas" / "quality.schema.json").read_text()
    )


def test_python_dash_m(installed: Path, elsewhere: Path) -> None:
    done = run(installed, elsewhere, "python", "-m", "provisioner", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("provisioner, version ")
