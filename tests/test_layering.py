"""Imports point one way: flows -> tasks -> {thinksound, storage, cot_prompts}.

Checked statically over every module (including imports inside functions), so a lazy import cannot
hide a wrong-way dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = {"prefect", "duckdb", "minio"}
FORBIDDEN = {
    "thinksound": ORCHESTRATION | {"storage", "tasks", "flows", "cot_prompts"},
    "cot_prompts": ORCHESTRATION | {"storage", "tasks", "flows", "thinksound"},
    "storage": {"prefect", "tasks", "flows", "thinksound", "cot_prompts"},
    "tasks": {"flows"},
    "flows": {"storage", "cot_prompts", "thinksound"},
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found in {package}/"
    wrong = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & FORBIDDEN[package])
        for path in modules
        if _imported_roots(path) & FORBIDDEN[package]
    }
    assert not wrong, f"{package}/ must not import these: {wrong}"


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from prefect import flow\n    import storage.lineage\n")
    assert _imported_roots(module) >= {"prefect", "storage"}


def test_tests_import_helpers_by_bare_name():
    """tests/ is not a package: `from tests.media import ...` only works when the repository root happens
    to be on sys.path (PYTHONPATH), and fails in CI's plain `pytest -q`. Helpers are imported by bare name."""
    wrong = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("*.py")
        if "tests" in _imported_roots(path)
    )
    assert not wrong, f"import test helpers by bare name (from media import ...), not via tests.: {wrong}"
