"""The product does not need its tests: no module of the package (site_scons/highboot) or of its SCons
tool (site_scons/site_tools) imports the test support (site_scons/testkit) or loads its SCons tool.
SConstruct uses testkit only where a build makes test kernels, each place named here."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from conftest import ROOT

PRODUCT = [ROOT / "site_scons" / "highboot", ROOT / "site_scons" / "site_tools"]
TESTKIT = "testkit"
TESTKIT_TOOL = "testkit_tool"
#: Where SConstruct may use testkit (each `if`, as ast.unparse spells it): the `test` alias block
#: (the suite's configurations) may import it; the block that loads testkit's tool is for builds
#: that make a test kernel (the sample kernel when no KERNEL is given, and every kernel of
#: `scons test`), which print the tests' report.
SCONSTRUCT_IMPORTS = {"highboot_suite"}
SCONSTRUCT_TOOL_LOADS = {"sample_kernel or highboot_suite"}


def uses_of_testkit(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every import of testkit (at any depth: in a function too) and every load of its SCons tool,
    each with what it is ("import" or "tool")."""
    found: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == TESTKIT for a in node.names):
            found.append((node, "import"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == TESTKIT:
            found.append((node, "import"))
        elif isinstance(node, ast.Call) and any(isinstance(a, ast.Constant) and a.value in (TESTKIT, TESTKIT_TOOL)
                                                for a in node.args):  # Tool("testkit_tool"), import_module(...)
            found.append((node, "tool"))
    return found


def product_modules() -> list[Path]:
    return sorted(p for d in PRODUCT for p in d.rglob("*.py"))


def test_the_scan_finds_what_it_looks_for() -> None:
    tree = ast.parse("import testkit.report\nfrom testkit import bootcheck\n"
                     "def f():\n    from testkit.matrix import x\nenv.Tool('testkit_tool')\nimport highboot\n")
    assert [kind for _, kind in uses_of_testkit(tree)] == ["import", "import", "import", "tool"]
    assert len(product_modules()) > 20


def test_the_product_does_not_import_testkit() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in product_modules()
                 for node, _ in uses_of_testkit(ast.parse(p.read_text(), str(p)))]
    assert not offenders, f"the product uses the test support: {offenders}"


def _enclosing_ifs(tree: ast.AST) -> dict[ast.AST, list[str]]:
    """Each node's enclosing `if` tests, as source text (innermost last)."""
    out: dict[ast.AST, list[str]] = {}

    def visit(node: ast.AST, tests: list[str]) -> None:
        out[node] = tests
        for child in ast.iter_child_nodes(node):
            inner = tests + [ast.unparse(node.test)] if isinstance(node, ast.If) and child in node.body else tests
            visit(child, inner)

    visit(tree, [])
    return out


def test_sconstruct_uses_testkit_only_for_test_kernels() -> None:
    tree = ast.parse((ROOT / "SConstruct").read_text(), "SConstruct")
    ifs = _enclosing_ifs(tree)
    uses = uses_of_testkit(tree)
    assert {kind for _, kind in uses} == {"import", "tool"}  # the scan sees both (the matrix, the report's tool)
    for node, kind in uses:
        allowed = SCONSTRUCT_IMPORTS if kind == "import" else SCONSTRUCT_TOOL_LOADS
        assert ifs[node] and ifs[node][-1] in allowed, (
            f"SConstruct:{node.lineno}: testkit ({kind}) outside the blocks for test kernels {sorted(allowed)}")


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_generated_files_depend_on_their_own_generator() -> None:
    """Product renders depend on highboot's modules; the test renders (the report) add testkit's."""
    product = _load(ROOT / "site_scons" / "site_tools" / "highboot_tool.py", "highboot_tool_under_test")
    assert [Path(d) for d in product.PACKAGE_DIRS] == [ROOT / "site_scons" / "highboot"]
    test = _load(ROOT / "site_scons" / "testkit" / "testkit_tool.py", "testkit_tool_under_test")
    assert Path(test.PACKAGE_DIR) == ROOT / "site_scons" / "testkit"
