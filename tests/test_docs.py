"""The documentation: every Python example in README.md and docs/*.md runs as written,
links stay inside the repository, the config reference covers every key, and the Sphinx
site builds with warnings as errors.

A Python block that is not meant to run (a fragment, or one that needs data you have to
download) is marked by an HTML comment on the line just above its fence:

    <!-- no-run -->
    ```python
    ...
    ```

A `print(...)  # EXPECTED` line in a block that runs must print EXPECTED. A failure names the
file and the line of the block.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def user_documents() -> list[str]:
  """README.md, CHANGELOG.md, bench/README.md and every Markdown page of docs/ (not the
  build output or generated pages), relative to the repository root."""
  docs = [
    p
    for p in sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    if not any(part in p for part in (os.sep + "_build" + os.sep, os.sep + "_generated" + os.sep))
  ]
  names = ["README.md", "CHANGELOG.md", os.path.join("bench", "README.md")]
  names += [os.path.relpath(p, ROOT) for p in docs]
  return [n for n in names if os.path.exists(os.path.join(ROOT, n))]


def code_blocks(path: str, language: str = "python"):
  """(first line number of the code, code, runs) for each fenced block in `language`."""
  with open(os.path.join(ROOT, path)) as f:
    lines = f.read().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = FENCE.match(lines[i])
    if m and m.group(1) == language:
      runs = not (i > 0 and lines[i - 1].strip() == NO_RUN)
      j = i + 1
      while j < len(lines) and not lines[j].startswith("```"):
        j += 1
      blocks.append((i + 2, "\n".join(lines[i + 1 : j]) + "\n", runs))
      i = j + 1
    elif m:  # another language's block, or a bare fence: skip to its end
      i += 1
      while i < len(lines) and not lines[i].startswith("```"):
        i += 1
      i += 1
    else:
      i += 1
  return blocks


PYTHON_BLOCKS = [
  pytest.param(path, line, code, id=f"{path}:{line}")
  for path in user_documents()
  for line, code, runs in code_blocks(path)
  if runs
]


def test_there_are_examples():
  assert any(p.values[0] == "README.md" for p in PYTHON_BLOCKS)


def test_readme_stays_short():
  """The README is a front page (what RAR is, two commands, two quickstarts, one results
  table); everything else belongs in docs/."""
  with open(os.path.join(ROOT, "README.md")) as f:
    assert len(f.read().splitlines()) <= 200


@pytest.mark.parametrize("path,line,code", PYTHON_BLOCKS)
def test_python_block_compiles(path, line, code):
  # Padded so that a syntax error names the line in the Markdown file.
  compile("\n" * (line - 1) + code, path, "exec")


@pytest.mark.slow
@pytest.mark.parametrize("path,line,code", PYTHON_BLOCKS)
def test_python_block_runs_as_written(path, line, code, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile("\n" * (line - 1) + code, os.path.join(ROOT, path), "exec"), {})
  printed = out.getvalue()
  for k, source in enumerate(code.splitlines()):
    m = re.match(r"\s*print\(.*\)\s+#\s*(.+)$", source)
    if m:
      assert m.group(1).strip() in printed, (
        f"{path}:{line + k}: expected {m.group(1).strip()!r}, printed {printed!r}"
      )


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_links_stay_in_the_repository_and_resolve():
  problems = []
  for path in user_documents():
    with open(os.path.join(ROOT, path)) as f:
      for n, text in enumerate(f, start=1):
        for m in LINK.finditer(text):
          target = (m.group(1) or m.group(2)).split("#")[0]
          where = f"{path}:{n}: {target}"
          if re.match(r"^[a-z]+:", target):
            problems.append(f"{where} leaves the repository")
          elif target and not os.path.exists(
            os.path.normpath(os.path.join(ROOT, os.path.dirname(path), target))
          ):
            problems.append(f"{where} does not exist")
          elif ".." in target.split("/") and not os.path.normpath(
            os.path.join(ROOT, os.path.dirname(path), target)
          ).startswith(ROOT + os.sep):
            problems.append(f"{where} leaves the repository")
  assert not problems, "\n".join(problems)


def test_user_documents_speak_of_the_software_not_its_history():
  """No development-history words (the CHANGELOG holds the history)."""
  pattern = re.compile(r"\bround [0-9]+|\bissue [0-9]+|development vm|shared/RAR_REFERENCE", re.I)
  hits = []
  for path in [*user_documents(), "BENCHMARKS.md"]:
    if path == "CHANGELOG.md" or not os.path.exists(os.path.join(ROOT, path)):
      continue
    with open(os.path.join(ROOT, path)) as f:
      hits += [f"{path}:{n}: {t.strip()}" for n, t in enumerate(f, 1) if pattern.search(t)]
  assert not hits, "\n".join(hits)


def _rar_docs():
  sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
  try:
    import rar_docs
  finally:
    sys.path.pop(0)
  return rar_docs


def test_config_reference_lists_every_key_with_its_default():
  from rar_jax.runner.config import base_config

  table = _rar_docs().config_table()
  for key in base_config().to_dict():
    assert f"| `{key}` |" in table, key


def test_the_committed_config_table_is_current():
  """docs/tables/config_keys.md (included by docs/config.md) is what the source says."""
  with open(os.path.join(ROOT, "docs", "tables", "config_keys.md")) as f:
    assert f.read() == _rar_docs().config_table(), "run: python docs/_ext/rar_docs.py"


def test_config_comments_parser():
  source = (
    "def base_config():\n"
    "  c = ConfigDict()\n"
    "  # Model.\n"
    "  # The model's width,\n"
    "  # in units.\n"
    "  c.width = 3\n"
    "  c.depth = 2  # layers\n"
    "  #            (at least 1)\n"
    "\n"
    "  c.plain = 0\n"
  )
  assert _rar_docs().config_comments(source) == [
    ("", "Model"),
    ("width", "The model's width, in units."),
    ("depth", "layers (at least 1)"),
    ("plain", ""),
  ]


def test_api_reference_covers_every_public_module():
  modules = _rar_docs().api_modules()
  assert {"rar_jax", "rar_jax.core.step", "rar_jax.runner.config"} <= set(modules)
  assert not [m for m in modules if "._" in m]


@pytest.mark.slow
def test_sphinx_site_builds_without_warnings(tmp_path):
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_parser")
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "sphinx",
      "-W",
      "--keep-going",
      "-q",
      "-b",
      "html",
      "docs",
      str(tmp_path),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-5000:]


@pytest.mark.slow
def test_results_tables_are_what_bench_report_renders(tmp_path):
  """docs/tables/results_tables.md is bench/report.py's rendering of bench/results/."""
  out = tmp_path / "tables.md"
  subprocess.run(
    [sys.executable, os.path.join(ROOT, "bench", "report.py"), "--out", str(out)],
    cwd=tmp_path,
    check=True,
    capture_output=True,
    timeout=600,
  )
  with open(os.path.join(ROOT, "docs", "tables", "results_tables.md")) as f:
    committed = f.read().split("\n", 2)[2]
  assert out.read_text().split("\n", 2)[2] == committed, (
    "docs/tables/results_tables.md is stale: python bench/report.py --out "
    "docs/tables/results_tables.md --figure docs/_static/comparison.png"
  )


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
# Configs whose docstrings do not give a time and an expected result yet (data of your
# own: there is no single answer).
WITHOUT_EXPECTATIONS = {"split_mini_imagenet.py"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_docstring_gives_command_time_and_result(path):
  import ast

  with open(path) as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  name = os.path.basename(path)
  assert f"python train.py --config configs/{name}" in doc, f"{path}: no command"
  if name not in WITHOUT_EXPECTATIONS:
    assert "Time:" in doc and "Expect:" in doc, f"{path}: no Time: / Expect: line"


def test_running_md_names_every_error_class():
  from rar_jax import errors

  with open(os.path.join(ROOT, "docs", "running.md")) as f:
    text = f.read()
  missing = [name for name in errors.__all__ if f"`{name}`" not in text]
  assert not missing, f"docs/running.md does not name {missing}"


def test_every_config_key_has_a_meaning_in_the_reference():
  """Each key's row in the generated table says what it does (a comment next to or
  above its assignment in rar_jax/runner/config.py)."""
  empty = []
  for line in _rar_docs().config_table().splitlines():
    cells = [c.strip() for c in line.split("|")]
    if len(cells) > 3 and cells[1].startswith("`") and not cells[3]:
      empty.append(cells[1])
  assert not empty, f"config keys without a meaning in docs/config.md: {empty}"


def test_every_rar_jax_name_the_documents_use_exists():
  """`rar_jax.x.y` in README and docs/ resolves (a module or an attribute)."""
  import importlib
  import re

  paths = [os.path.join(ROOT, "README.md")] + [
    os.path.join(ROOT, "docs", n)
    for n in os.listdir(os.path.join(ROOT, "docs"))
    if n.endswith(".md")
  ]
  missing = []
  for path in paths:
    with open(path) as f:
      text = f.read()
    for name in set(re.findall(r"`(rar_jax(?:\.[A-Za-z_]\w*)+)", text)):
      parts = name.split(".")
      obj = importlib.import_module("rar_jax")
      try:
        for i, part in enumerate(parts[1:], 1):
          obj = (
            getattr(obj, part)
            if hasattr(obj, part)
            else importlib.import_module(".".join(parts[: i + 1]))
          )
      except ImportError:
        missing.append(f"{os.path.relpath(path, ROOT)}: {name}")
  assert not missing, missing
