"""Package boundaries of DESIGN.md, checked on the source (imports) and at run time (what loads)."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def file_imports(path: pathlib.Path) -> set[str]:
    """Top-level packages a source file imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def imported_packages(pkg: str) -> set[str]:
    return set().union(*(file_imports(p) for p in (ROOT / pkg).rglob("*.py")))


def test_speechllm_imports_neither_server_nor_prune_tools():
    assert not imported_packages("speechllm") & {"server", "prune_tools", "fastapi", "peft", "loadtests"}


def test_server_does_not_import_prune_tools():
    if (ROOT / "server").is_dir():
        assert "prune_tools" not in imported_packages("server")


def test_transcribe_verb_loads_neither_fastapi_nor_peft():
    code = ("import sys; from speechllm import cli, transcribe, generate, surgery, builders; "
            "print(sorted(m for m in ('fastapi', 'peft', 'server', 'prune_tools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
