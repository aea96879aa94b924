"""Shared by the bench scripts."""

import contextlib
import sys


def quiet(fn):
  """Keeps stdout for JSON lines: a run's own tables go to stderr."""

  def wrapped(*args, **kwargs):
    with contextlib.redirect_stdout(sys.stderr):
      return fn(*args, **kwargs)

  return wrapped
