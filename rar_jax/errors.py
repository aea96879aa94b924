"""Every error rar_jax raises on purpose. Each message names what is wrong and
what to do; `train.py` prints it as one line and exits 2."""

from __future__ import annotations


class RarError(Exception):
  """Base of the errors below: catch it to handle any expected failure."""


class ConfigError(RarError, ValueError):
  """A config key holds a value the run cannot use; the message names it."""


class SweepError(ConfigError):
  """``config.sweep`` cannot be parsed."""


class DataError(RarError, RuntimeError):
  """A dataset cannot be loaded or cannot form the requested stream."""


class TrainingDiverged(RarError, RuntimeError):
  """The loss became NaN/Inf; the message says which checkpoint, if any, is kept."""


class CheckpointError(RarError, RuntimeError):
  """A checkpoint that must be read as it is (re-evaluation) cannot be restored."""


__all__ = [
  "RarError",
  "ConfigError",
  "SweepError",
  "DataError",
  "TrainingDiverged",
  "CheckpointError",
]
