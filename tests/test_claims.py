"""Every speed ratio against the paper's code in the user documents comes from
one run (issue 38): `docs/tables/paper_code.md` is bench/report.py's rendering
of the session files (one file per run of bench/paper_code_step_time.py, each
line naming its system, each ratio a pair from one file), and every ratio the
README and docs/results.md state beside the paper's code is one of those."""

import glob
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
RATIO = re.compile(r"(?<![\w.])(\d+\.\d+)x\b")


@pytest.fixture(scope="module")
def speed():
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  try:
    import _speed_tables
  finally:
    sys.path.remove(os.path.join(ROOT, "bench"))
  return _speed_tables


def test_paper_code_tables_are_what_bench_report_renders(speed):
  with open(os.path.join(ROOT, "docs", "tables", "paper_code.md")) as f:
    committed = f.read().split("\n", 1)[1]
  assert speed.paper_code_tables() == committed, (
    "docs/tables/paper_code.md is stale: python bench/report.py --paper_code_out "
    "docs/tables/paper_code.md"
  )


def test_every_line_of_a_session_names_its_system(speed):
  for path in glob.glob(os.path.join(RESULTS, "paper_code_*.jsonl")):
    with open(path) as f:
      lines = [json.loads(line) for line in f if line.strip()]
    systems = {speed.system_of(r) for r in lines if "skipped" not in r}
    assert None not in systems, f"{path}: a line that names no system"
    assert speed.PAPER_SYSTEM in systems and "rar_jax" in systems, f"{path}: not both systems"


def _same_run_ratios(speed):
  return [
    ratio
    for path in glob.glob(os.path.join(RESULTS, "paper_code_*.jsonl"))
    for _, _, ratio in speed.paper_code_pairs(path)
  ]


def _claims(path):
  """The ratios of each paragraph (or list item) that speaks of the paper's code's speed."""
  with open(os.path.join(ROOT, path)) as f:
    blocks = re.split(r"\n\s*\n|\n(?=- )", f.read())
  for block in blocks:
    if "paper's code" in block and ("faster" in block or "ms" in block or "x /" in block):
      yield from RATIO.findall(block)


@pytest.mark.parametrize(
  "path", ["README.md", os.path.join("docs", "results.md"), os.path.join("docs", "data.md")]
)
def test_every_stated_ratio_against_the_paper_code_is_a_same_run_pair(speed, path):
  ratios = _same_run_ratios(speed)
  assert ratios
  unknown = []
  for claim in _claims(path):
    places = len(claim.split(".")[1])
    if not any(round(r, places) == float(claim) for r in ratios):
      unknown.append(f"{claim}x")
  assert not unknown, (
    f"{path} states ratios against the paper's code that no session file gives: {unknown} "
    "(docs/tables/paper_code.md lists the same-run ratios)"
  )


def test_readme_results_table_is_the_rendered_summary():
  """The README's results table is bench/report.py's summary table of bench/results/
  (the rows of docs/results.md's "Summary: methods by memory size")."""
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  try:
    from _quality_tables import summary_table
    from _tables import Runs
  finally:
    sys.path.remove(os.path.join(ROOT, "bench"))
  rendered = summary_table(Runs("quality"))
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  header = rendered.splitlines()[0]
  assert header in readme, "README.md has no results table"
  shown = readme[readme.index(header) :].split("\n\n")[0]

  def cells(text):
    return [[c.strip() for c in line.split("|")] for line in text.strip().splitlines()]

  assert cells(shown) == cells(rendered), (
    "README.md's results table differs from `summary_table` (bench/_quality_tables.py):\n"
    + rendered
  )
