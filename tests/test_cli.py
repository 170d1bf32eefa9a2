"""The CLI is the top of the package: no import cycle below it, nothing imports it, and it only parses argv into the
commands' config dataclasses."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import pytest

from mavis_core.cli import main
from mavis_core.options import command_line, config_argv

PACKAGE = Path(__file__).resolve().parents[1] / "mavis_core"


def module_name(path: Path) -> str:
    """mavis_core/training/build.py -> mavis_core.training.build (a package's own file: mavis_core.study.__init__,
    named as the project's before-stop hook names it, so that this test and the hook agree)."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (inside functions too), relative or absolute."""
    name = module_name(path)
    package = name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return (found & modules) - {name}


def import_graph() -> nx.DiGraph:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for path in paths:
        graph.add_edges_from((module_name(path), dep) for dep in imported_modules(path, modules))
    return graph


def test_the_package_has_no_import_cycle():
    assert list(nx.simple_cycles(import_graph())) == []


def test_nothing_but_the_entry_point_imports_the_cli():
    graph = import_graph()
    assert set(graph.predecessors("mavis_core.cli")) == {"mavis_core.__main__"}


def test_the_graph_sees_imports_inside_functions_relative_and_absolute(tmp_path, monkeypatch):
    """On a made-up package: a lazy absolute import, a from-import of a submodule and a relative import are all
    edges, and a cycle through them is found (so the checks above can fail)."""
    package = tmp_path / "mavis_core"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("def f():\n    import mavis_core.b\n    from mavis_core import c\n")
    (package / "b.py").write_text("from .sub.d import x\n")
    (package / "c.py").write_text("")
    (package / "sub" / "d.py").write_text("def g():\n    from .. import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = import_graph()
    assert {("mavis_core.a", "mavis_core.b"), ("mavis_core.a", "mavis_core.c"), ("mavis_core.b", "mavis_core.sub.d"),
            ("mavis_core.sub.d", "mavis_core.a")} <= set(graph.edges)
    assert [sorted(c) for c in nx.simple_cycles(graph)] == [["mavis_core.a", "mavis_core.b", "mavis_core.sub.d"]]


@dataclass(frozen=True)
class Example:
    stack: Path = Path("assets/stack.toml")
    fused: bool = False
    warm_start: bool = field(default=True, metadata={"option": "--cold-start"})
    betas: tuple[float, ...] = (1.0, 2.0)
    compare: tuple[Path, ...] = field(default=(), metadata={"repeat": True})
    out: Path | None = None


def test_a_config_becomes_the_options_that_differ_from_its_defaults():
    assert config_argv(Example()) == []
    cfg = Example(fused=True, warm_start=False, betas=(4.0,), compare=(Path("a"), Path("b c")), out=Path("o"))
    assert config_argv(cfg) == ["--fused", "--cold-start", "--betas", "4.0", "--compare", "a", "--compare", "b c",
                                "--out", "o"]
    assert command_line("x", cfg).startswith("python -m mavis_core x --fused --cold-start") and "'b c'" in \
        command_line("x", cfg)


@pytest.mark.parametrize("argv, message", [
    (["train-values", "--stack", "s.toml"], "exactly one of objective"),
    (["train-values", "--fused", "--chunk-range", "4"], "chunk_range"),
    (["value-report", "--betas", "1,x"], "--betas must be comma-separated numbers"),
    (["value-agreement", "--prompts", "0"], "--prompts must be >= 1"),
    (["build", "--steps", "nope", "--out", "nowhere"], "unknown step"),
])
def test_bad_options_get_one_line_before_any_work(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
