"""The import layers read top-down (DESIGN.md): sweeps -> sweep -> (report, tracking) -> tune ->
train -> trainer / evaluate -> (losses, penalties, metrics, collapse, models, data) -> config. A
module imports only modules of its own layer or below, at module level and inside functions."""

import ast
from pathlib import Path

import ganlib

PACKAGE = Path(ganlib.__file__).parent
# Lower number = lower layer. Modules of one layer may import each other.
LAYERS = {
    "config": 0,
    "losses": 1, "penalties": 1, "collapse": 1, "metrics": 1, "models": 1, "data": 1, "figures": 1,
    "constraints": 2, "optim": 2, "reaper": 2, "rungs": 2,
    "trainer": 3,
    "evaluate": 4, "cohort": 4,
    "train": 5, "cohort_run": 5,
    "tune": 6, "tune_state": 6, "spaces": 6, "settings": 6,
    "tracking": 7, "driver": 7, "report": 7, "report_page": 7, "plan": 7, "cluster": 7, "preflight": 7, "confirm": 7,
    "cohort_search": 7,
    "sweep": 8,
    "__init__": 9,
}


def _imports(path: Path) -> set[str]:
    """ganlib modules imported by the file at ``path`` (relative or absolute imports)."""
    package = path.parent.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + ([f"{module}.{a.name}" for a in node.names] if node.level and not node.module else [])
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t.split(".")[1] for t in targets if t.startswith("ganlib.") and len(t.split(".")) > 1}
    return found


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE).parts
    return relative[0].removesuffix(".py")


def test_every_module_imports_downward_only():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        me = _layer(path)
        assert me in LAYERS, f"{path}: place the new module in a layer of tests/test_layers.py"
        for other in _imports(path) - {me}:
            if LAYERS[other] > LAYERS[me]:
                problems.append(f"{path.relative_to(PACKAGE)} ({me}, layer {LAYERS[me]}) imports {other} "
                                f"(layer {LAYERS[other]})")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path):
    assert "tracking" in _imports(PACKAGE / "sweep.py")
    assert "config" in _imports(PACKAGE / "collapse.py")
