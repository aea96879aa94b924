"""README.md and the documentation's commands: the test and docs commands are what CI
runs, and every `python train.py ...` command parses and runs what it says. (The Python
examples of README.md and docs/ run in tests/test_docs.py.)"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_BUILD = "sphinx-build -W --keep-going -b html docs docs/_build/html"


def test_readme_test_command_is_what_ci_runs():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = f.read()
  command = "pip install -e '.[test]' && python -m pytest"
  assert command in readme and command in ci
  lint = "ruff check . && ruff format --check . && mypy"
  assert lint in readme and lint in ci
  assert DOCS_BUILD in readme and DOCS_BUILD in ci


def readme_train_commands(paths=("README.md",)):
  """Each `python train.py ...` command in the bash blocks of `paths`, as its arguments
  (placeholders like `--config ...` left out)."""
  commands = []
  for path in paths:
    with open(os.path.join(ROOT, path)) as f:
      blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    for block in blocks:
      for line in block.replace("\\\n", " ").splitlines():
        if "python train.py" in line and "..." not in line:
          commands.append(shlex.split(line[line.index("python train.py") :], comments=True)[2:])
  return commands


DOC_PAGES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
COMMANDS = [pytest.param(a, id=" ".join(a)) for a in readme_train_commands()] + [
  pytest.param(a, id=" ".join(a), marks=pytest.mark.slow) for a in readme_train_commands(DOC_PAGES)
]


# Runs train.py's real flag parsing and config checks, with training replaced by
# a report of what would run.
HARNESS = """
import json, runpy, sys
from rar_jax.runner import experiment
def report(config, workdir):
  experiment.validate_config(config)
  print(json.dumps({"methods": experiment.method_names(config), "workdir": workdir}))
  return {}
experiment.train_and_evaluate = report
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("args", COMMANDS)
def test_readme_train_commands_parse_and_run_what_they_say(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-c", HARNESS, os.path.join(ROOT, "train.py"), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  run = json.loads(out.stdout.splitlines()[0])
  for arg in args:
    if arg.startswith("--config.methods="):
      assert run["methods"] == arg.split("=", 1)[1].split(",")
  if "--workdir" in args:
    assert run["workdir"] == args[args.index("--workdir") + 1]


def test_docs_name_the_files_and_caches_a_run_uses():
  with open(os.path.join(ROOT, "docs", "running.md")) as f:
    running = f.read()
  for name in (
    "placement.json",
    "comparison.png",
    "~/.cache/rar_jax/xla",
    "--config.progress=false",
    "tfds build",
  ):
    assert name in running, name
