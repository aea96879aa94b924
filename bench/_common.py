"""Shared by the bench scripts."""

import contextlib
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
