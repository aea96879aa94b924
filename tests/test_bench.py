"""bench/ keeps the library's standards (issue 37): no script over 400 lines,
every script listed in bench/README.md, and bench/results/ small: the JSON lines
the report renders from, not the run folders that the commands regenerate."""

import glob
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
MAX_LINES = 400
MAX_RESULTS_BYTES = 3 * 2**20


def _scripts():
  return sorted(glob.glob(os.path.join(BENCH, "*.py")) + glob.glob(os.path.join(BENCH, "*.sh")))


def test_no_bench_file_is_over_400_lines():
  long = {}
  for path in _scripts():
    with open(path) as f:
      n = sum(1 for _ in f)
    if n > MAX_LINES:
      long[os.path.basename(path)] = n
  assert not long, f"bench files over {MAX_LINES} lines: {long}"


def test_bench_readme_lists_every_script():
  with open(os.path.join(BENCH, "README.md")) as f:
    text = f.read()
  missing = [os.path.basename(p) for p in _scripts() if f"`{os.path.basename(p)}`" not in text]
  assert not missing, f"bench/README.md does not list {missing}"


def _tracked(prefix):
  out = subprocess.run(
    ["git", "ls-files", "-z", prefix], cwd=ROOT, capture_output=True, text=True, check=True
  )
  return [p for p in out.stdout.split("\0") if p]


def test_results_are_small_and_hold_no_run_folders():
  files = _tracked("bench/results")
  if not files:  # not a git checkout (an sdist): nothing to check
    return
  paths = [os.path.join(ROOT, p) for p in files]
  size = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
  assert size < MAX_RESULTS_BYTES, f"bench/results/ holds {size / 2**20:.1f} MiB of tracked files"
  run_files = [p for p in files if p.endswith(("metrics.json", "config.json"))]
  assert not run_files, f"run folders are committed: {run_files[:5]}"
