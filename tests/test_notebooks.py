"""The notebooks in notebooks/: valid nbformat v4, committed without outputs, free of
anything that looks like a secret, with code cells that compile as IPython, and (for
the generated ones) in step with notebooks/_build.py."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
WAREHOUSES = ("bigquery", "databricks", "snowflake")

SECRET_PATTERNS = {
    "PEM private key": re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "Google access token": re.compile(r"\bya29\.[A-Za-z0-9_-]{20,}"),
    "Google client secret": re.compile(r"\bGOCSPX-[A-Za-z0-9_-]{20,}"),
    "Databricks PAT": re.compile(r"\bdapi[0-9a-f]{32}\b"),
    "Fernet key": re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    # a secret-ish name given a literal that is not an obvious <placeholder>
    "literal secret": re.compile(
        r"""(?ix)(client_secret|password|crypt_key|private_key)\b["']?\s*[:=]\s*
            ["'](?!<)[^"'\s]{8,}["']"""
    ),
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_notebooks_build", NOTEBOOKS_DIR / "_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_notebook_per_warehouse() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert set(WAREHOUSES) <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_valid_nbformat_v4(path: Path) -> None:
    nb = _read(path)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.cells, "empty notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_outputs_or_execution_counts(path: Path) -> None:
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs"
            assert cell.execution_count is None, f"cell {i} has an execution count"
        assert not cell.get("attachments"), f"cell {i} has attachments"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_secret_looking_strings(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # report where, never the match itself
    found = {name: m.start() for name, rx in SECRET_PATTERNS.items() if (m := rx.search(text))}
    assert not found, f"secret-looking strings (name: character offset): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_code_cells_compile_as_ipython(path: Path) -> None:
    transformer = TransformerManager()
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        python = transformer.transform_cell(cell.source)
        compile(python, f"{path.name}:cell{i}", "exec")


def test_secret_patterns_catch_secrets() -> None:
    """The scan is not vacuous: each pattern fires on a made-up example."""
    samples = {
        "PEM private key": "-----BEGIN " + "PRIVATE KEY-----",
        "JWT": "eyJhbGciOiJSUzI1NiJ9." + "eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZw",
        "Google access token": "ya29." + "a0AfB_byC1234567890abcdefghij",
        "Google client secret": "GOCSPX-" + "abcdefghijklmnopqrstuvwx",
        "Databricks PAT": "dapi" + "0123456789abcdef0123456789abcdef",
        "Fernet key": "x" * 43 + "=",
        "AWS access key": "AKIA" + "ABCDEFGHIJKLMNOP",
        "literal secret": 'c.ConnAuth.client_secret = "' + 'hunter2hunter2"',
    }
    for name, sample in samples.items():
        assert SECRET_PATTERNS[name].search(sample), name
    placeholder = 'c.ConnAuth.client_secret = "<from the environment>"'
    assert not SECRET_PATTERNS["literal secret"].search(placeholder)


def test_generated_notebooks_match_build_script() -> None:
    build = _load_build()
    rendered = build.render_all()
    assert {f"{w}.ipynb" for w in WAREHOUSES} <= set(rendered)
    for name, text in rendered.items():
        on_disk = (NOTEBOOKS_DIR / name).read_text(encoding="utf-8")
        assert on_disk == text, f"{name} is stale: run python notebooks/_build.py"
