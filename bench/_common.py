"""Shared by the bench scripts."""

import contextlib
import os
import platform
import sys


def quiet(fn):
  """Keeps stdout for JSON lines: a run's own tables go to stderr."""

  def wrapped(*args, **kwargs):
    with contextlib.redirect_stdout(sys.stderr):
      return fn(*args, **kwargs)

  return wrapped


def cli(main):
  """Runs a bench script's ``main()``: a bad value (`rar_jax.errors.RarError`)
  is one ``error:`` line and exit status 2, as train.py answers it."""
  from rar_jax.errors import RarError

  try:
    main()
  except RarError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def cpu_model() -> str:
  """The CPU's model name and family, as lscpu shows them: timings, and on the
  CPU even numbers, are only comparable on one (docs/reproducibility.md)."""
  try:
    with open("/proc/cpuinfo") as f:
      info = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in f) if v.strip()
      )
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')})"
  except OSError:
    return platform.processor() or "unknown"


def pin_one_core():
  """Pins this process to one core: XLA's Eigen convolutions use its thread
  pool whatever the flags say."""
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
