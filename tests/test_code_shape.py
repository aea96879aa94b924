"""The library's shape, as the project's conventions ask: small functions,
the step apart from the shell, one module for errors and one for config."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 80


def _functions(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node.name, node.end_lineno - node.lineno + 1


def _imports(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names)


def test_no_long_functions_in_the_library():
  long = [
    (os.path.relpath(p, ROOT), name, n)
    for p in glob.glob(os.path.join(ROOT, "rar_jax", "*.py"))
    for name, n in _functions(p)
    if n > MAX_LINES
  ]
  assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_the_step_never_imports_the_shell():
  shell = {
    "rar_jax.data",
    "rar_jax.experiment",
    "rar_jax.report",
    "rar_jax.checkpoint",
    "rar_jax.hooks",
    "rar_jax.writer",
    "rar_jax.config",
    "rar_jax.plan",
    "rar_jax.loop",
  }
  for name in (
    "step",
    "stages",
    "buffer",
    "attack",
    "neighbors",
    "mixup",
    "retrieval",
    "aser",
    "method",
    "models",
  ):
    bad = set(_imports(os.path.join(ROOT, "rar_jax", f"{name}.py"))) & shell
    assert not bad, f"rar_jax/{name}.py imports {bad}"


def test_errors_are_defined_in_one_module():
  for p in glob.glob(os.path.join(ROOT, "rar_jax", "*.py")):
    if p.endswith("errors.py"):
      continue
    with open(p) as f:
      tree = ast.parse(f.read())
    errors = [
      n.name
      for n in ast.walk(tree)
      if isinstance(n, ast.ClassDef)
      and any(getattr(b, "id", "").endswith(("Error", "Exception")) for b in n.bases)
    ]
    assert not errors, f"{os.path.relpath(p, ROOT)} defines {errors}; put them in errors.py"
