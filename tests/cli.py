"""Runs ``python train.py`` as a user does, for the end-to-end tests."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args, cwd=ROOT, timeout=600):
  """``train.py ARGS`` in a fresh process on the CPU; the CompletedProcess."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "train.py"), *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=env,
  )
