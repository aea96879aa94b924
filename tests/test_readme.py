"""The README's library example runs as written."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_readme_python_blocks_run(capsys):
  with open(os.path.join(ROOT, "README.md")) as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  assert blocks
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})
  assert "(3, 100) 200" in capsys.readouterr().out


def test_readme_test_command_is_what_ci_runs():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = f.read()
  command = "pip install -e '.[test]' && python -m pytest"
  assert command in readme and command in ci
  lint = "ruff check . && ruff format --check . && mypy"
  assert lint in readme and lint in ci


def readme_train_commands():
  """Each `python train.py ...` command in the README's bash blocks, as its arguments
  (placeholders like `--config ...` left out)."""
  with open(os.path.join(ROOT, "README.md")) as f:
    blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
  commands = []
  for block in blocks:
    for line in block.replace("\\\n", " ").splitlines():
      if "python train.py" in line and "..." not in line:
        commands.append(shlex.split(line[line.index("python train.py") :], comments=True)[2:])
  return commands


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


@pytest.mark.parametrize("args", readme_train_commands(), ids=" ".join)
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


def test_readme_names_the_files_and_caches_a_run_uses():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  for name in (
    "placement.json",
    "comparison.png",
    "~/.cache/rar_jax/xla",
    "--config.progress=false",
    "tfds build",
  ):
    assert name in readme, name
