"""The code's shape limits (developers' guide, issue 19): every file in explain/ at most 500
lines, every function at most 60 lines, at most 5 positional parameters (self / cls not
counted; keyword-only and *args are free).

Known offenders are listed below, each with its reason. The test fails for any new offender,
and for an allowance that is no longer needed (remove it when the file is split)."""

from __future__ import annotations

import ast
from pathlib import Path

import explain

CODE = Path(explain.__file__).resolve().parent  # the copy under test
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_POSITIONAL = 5

# file (relative to the repository) -> why it may be longer for now (none today)
LONG_FILES: dict[str, str] = {}
# "file::Qualified.name" -> why the function may be longer for now (none today)
LONG_FUNCTIONS: dict[str, str] = {}
# "file::Qualified.name" -> why it takes more positional parameters (none today)
MANY_PARAMETERS: dict[str, str] = {}


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def positional(node: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in node.args.posonlyargs + node.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def measure() -> dict[str, dict[str, int]]:
    """Offenders of each limit: file or "file::function" -> its number."""
    found: dict[str, dict[str, int]] = {"files": {}, "functions": {}, "parameters": {}}
    for path in sorted(CODE.rglob("*.py")):
        rel = path.relative_to(CODE.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            found["files"][rel] = len(text.splitlines())
        for name, node in functions(ast.parse(text, rel)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found["functions"][f"{rel}::{name}"] = length
            if len(positional(node)) > MAX_POSITIONAL:
                found["parameters"][f"{rel}::{name}"] = len(positional(node))
    return found


ALLOWED = {"files": LONG_FILES, "functions": LONG_FUNCTIONS, "parameters": MANY_PARAMETERS}
LIMITS = {"files": MAX_FILE_LINES, "functions": MAX_FUNCTION_LINES,
          "parameters": MAX_POSITIONAL}


def test_no_new_file_function_or_parameter_list_over_the_limits():
    found = measure()
    new = {kind: {k: n for k, n in found[kind].items() if k not in ALLOWED[kind]}
           for kind in found}
    assert new == {"files": {}, "functions": {}, "parameters": {}}, (
        f"over the limits (files {MAX_FILE_LINES} lines, functions {MAX_FUNCTION_LINES} "
        f"lines, {MAX_POSITIONAL} positional parameters): {new}")


def test_every_allowance_is_still_needed():
    found = measure()
    stale = {kind: sorted(set(ALLOWED[kind]) - set(found[kind])) for kind in ALLOWED}
    assert stale == {"files": [], "functions": [], "parameters": []}, (
        f"now within the limits: remove these allowances from {Path(__file__).name}: {stale}")


def test_the_checker_sees_what_it_checks():
    """The measure itself: a method's self is free, nested functions and classes count."""
    tree = ast.parse("class A:\n    def f(self, a, b, c, d, e):\n        def g(*a, k=1):\n"
                     "            pass\n\ndef h(a, b, c, d, e, f=0):\n    pass\n")
    found = {name: len(positional(node)) for name, node in functions(tree)}
    assert found == {"A.f": 5, "A.f.g": 0, "h": 6}
    assert len(list(CODE.rglob("*.py"))) > 30  # it read the package, not an empty folder
