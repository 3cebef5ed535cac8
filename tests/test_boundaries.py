"""Package boundaries (docs/architecture.md), checked on the source (imports, private members) and at run
time (what a verb loads).

    .venv/bin/python -m pytest -q tests/test_boundaries.py

The import map has two arrows between our packages, speechllm <- prune_tools and speechllm <- server;
loadtests and deploy import nothing of ours (they reach the server over HTTP); scripts and tests may
import anything. ``FORBIDDEN`` below is that map as a table, and every top-level folder holding Python
must be in it. Only absolute ``import`` statements are seen: the verb table of ``speechllm/cli.py`` names
other packages' modules as strings, imported only when that verb runs (the runtime tests check it).
"""

import ast
import pathlib
import subprocess

import pytest

from tests.conftest import ROOT, file_imports, python_stdout

#: our top-level packages (and folders of Python files)
OURS = frozenset({"speechllm", "prune_tools", "server", "loadtests", "deploy", "scripts", "tests"})
#: package -> top-level imports it must not have: the packages of ours it may not depend on, plus the
#: third-party packages that would put it in the wrong layer
FORBIDDEN: dict[str, frozenset[str]] = {
    # the core: what a SpeechLLM is; the CLI and `slimspeech transcribe` load no web or training stack
    "speechllm": OURS - {"speechllm"} | {"fastapi", "peft"},
    # offline pipeline and the in-process comparison (prune_tools.report)
    "prune_tools": OURS - {"prune_tools", "speechllm"},
    # the serving stack never needs the offline pipeline
    "server": OURS - {"server", "speechllm"},
    # load generator: HTTP only, so it runs on any client machine without torch or a model
    "loadtests": OURS - {"loadtests"} | {"torch", "transformers", "peft", "fastapi", "vllm"},
    # compose/Kubernetes helpers (the container health check, the dashboard generator): stdlib only
    "deploy": OURS - {"deploy"},
    # glue (bench_server.py runs speechllm in-process beside `slimspeech serve`): may import anything
    "scripts": frozenset(),
    # the tests exercise every package
    "tests": frozenset(),
}


def imported_packages(pkg: str) -> set[str]:
    return set().union(*(file_imports(p) for p in (ROOT / pkg).rglob("*.py")))


def python_folders() -> set[str]:
    """Top-level folders holding Python files, as git sees them (tracked, or new and not ignored), so a
    build/ copy or a run folder does not count; the file system when this is no git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = [str(p.relative_to(ROOT)) for p in ROOT.glob("*/**/*.py") if not p.parts[len(ROOT.parts)].startswith(".")]
    return {pathlib.PurePath(f).parts[0] for f in out if len(pathlib.PurePath(f).parts) > 1}


def test_the_table_covers_every_package():
    assert python_folders() == set(FORBIDDEN) == OURS


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_map(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ holds no Python file: update the table"
    wrong = {str(p.relative_to(ROOT)): sorted(file_imports(p) & FORBIDDEN[package]) for p in files}
    assert not {f: names for f, names in wrong.items() if names}


def test_the_scan_sees_the_arrows_that_exist():
    """The map's arrows are really there: a scan that saw no imports would pass the table vacuously."""
    assert {"speechllm"} <= imported_packages("server") & imported_packages("prune_tools")
    assert {"httpx", "soundfile"} <= imported_packages("loadtests")


def test_transcribe_verb_loads_neither_fastapi_nor_peft():
    code = ("import sys; from speechllm import cli, transcribe_cli, generate, surgery, builders; "
            "print(sorted(m for m in ('fastapi', 'peft', 'server', 'prune_tools') if m in sys.modules))")
    assert python_stdout(code) == "[]"


def test_loadtest_verb_loads_no_model_code():
    code = ("import sys, loadtests.run; "
            "print(sorted(m for m in ('torch', 'speechllm', 'server', 'prune_tools') if m in sys.modules))")
    assert python_stdout(code) == "[]"


# ---- private members --------------------------------------------------------------------------
#: packages where no module touches another module's private members
PRIVATE_RULE = ("server", "loadtests")
#: underscore names that are public API: namedtuple's methods and fields
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own(node: ast.AST) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own members, wherever they were defined."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_names_defined(tree: ast.AST) -> set[str]:
    """Underscore names this module defines: functions, classes, assigned names, ``self._x = ...``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _own(node.value):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def foreign_private_accesses(source: str, filename: str = "<source>") -> list[str]:
    """``obj._name`` (or ``getattr(obj, "_name")``) where ``obj`` is not self/cls/super() and ``_name`` is
    not defined in this module: a reach into another module's internals. -> ``"file:line: obj._name"``.

    A name defined here is fine on any object (``other._x`` in a class that sets ``self._x``); the
    check goes by name, so it cannot tell a foreign ``_x`` that happens to share a local name."""
    tree = ast.parse(source)
    own = private_names_defined(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name, owner = node.attr, node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name, owner = node.args[1].value, node.args[0]
        else:
            continue
        if _private(name) and name not in own and name not in PUBLIC_UNDERSCORE and not _own(owner):
            found.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(owner)}.{name}"))
    return [hit for _, hit in sorted(found)]


def test_private_member_check_finds_what_it_should():
    source = '''
class Handle:
    def __init__(self):
        self._future = None
    def same(self, other):
        return other._future                     # fine: Handle's own member, in Handle's module
def run(engine, mod, point):
    engine._executor.submit(print)               # another module's internals
    getattr(engine, "_scheduler")
    mod._helper()
    return point._replace(x=1), super()._y, cls._z, self._w, engine.__class__
'''
    assert foreign_private_accesses(source) == [
        "<source>:8: engine._executor", "<source>:9: engine._scheduler", "<source>:10: mod._helper"]


@pytest.mark.parametrize("package", PRIVATE_RULE)
def test_no_module_reaches_into_another_modules_private_members(package):
    found = [hit for p in sorted((ROOT / package).rglob("*.py"))
             for hit in foreign_private_accesses(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found
