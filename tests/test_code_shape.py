"""The library's shape: small functions and modules, and one test per
architectural boundary (derived from the package tree, not hand lists)."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "rar_jax")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def _library_files():
  return sorted(glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True))


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path):
  """Every rar_jax module a file imports, at any depth of the file."""
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names)


def _in_package(name, package):
  return name == package or name.startswith(package + ".")


def _violations(package, forbidden):
  return [
    (_module_name(p), name)
    for p in _library_files()
    if _in_package(_module_name(p), package)
    for name in _imports(p)
    if any(_in_package(name, f) for f in forbidden)
  ]


def _functions(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node.name, node.end_lineno - node.lineno + 1


def test_no_long_functions_in_the_library():
  long = [
    (os.path.relpath(p, ROOT), name, n)
    for p in _library_files()
    for name, n in _functions(p)
    if n > MAX_FUNCTION_LINES
  ]
  assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_long_modules_in_the_library():
  long = []
  for p in _library_files():
    with open(p) as f:
      n = sum(1 for _ in f)
    if n > MAX_MODULE_LINES:
      long.append((os.path.relpath(p, ROOT), n))
  assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


# package -> what it must never import. The core is pure replay arithmetic;
# models know nothing of replay; evaluation reads the core's state but never
# the shell; nothing below the runner knows the runner.
BOUNDARIES = {
  "rar_jax.core": ("rar_jax.runner", "rar_jax.data", "rar_jax.evaluation"),
  "rar_jax.models": ("rar_jax.core", "rar_jax.runner", "rar_jax.data", "rar_jax.evaluation"),
  "rar_jax.nnx_models": ("rar_jax.core", "rar_jax.runner", "rar_jax.data", "rar_jax.evaluation"),
  "rar_jax.evaluation": ("rar_jax.runner", "rar_jax.data"),
  "rar_jax.data": ("rar_jax.core", "rar_jax.runner", "rar_jax.evaluation", "rar_jax.models"),
}


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_architecture_boundary(package):
  bad = _violations(package, BOUNDARIES[package])
  assert not bad, f"{package} must not import {BOUNDARIES[package]}: {bad}"


def test_the_core_never_does_io_or_parses_flags():
  io = (
    "absl",
    "ml_collections",
    "tensorflow",
    "tensorflow_datasets",
    "orbax",
    "tqdm",
    "matplotlib",
    "tensorboardX",
    "json",
    "pickle",
  )
  bad = _violations("rar_jax.core", io)
  assert not bad, f"the replay core imports I/O or CLI modules: {bad}"


def test_every_library_module_is_in_a_boundary_or_the_top_level():
  top = {"rar_jax", "rar_jax.errors", "rar_jax.models"}
  loose = [
    m
    for m in map(_module_name, _library_files())
    if m not in top and not any(_in_package(m, p) for p in (*BOUNDARIES, "rar_jax.runner"))
  ]
  assert not loose, f"modules outside the architecture's packages: {loose}"


def test_errors_are_defined_in_one_module():
  for p in _library_files():
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
