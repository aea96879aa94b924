"""Every error rar_jax raises on purpose. Each message names what is wrong and
what to do; `train.py` prints it as one line and exits 2."""

from __future__ import annotations


class RarError(Exception):
  """Base of the errors below: catch it to handle any expected failure."""


class ArgumentError(RarError, ValueError):
  """A library function got an argument it cannot use; the message names the
  argument, the value and what is allowed."""


class ConfigError(ArgumentError):
  """A config key holds a value the run cannot use; the message names it."""


class StageError(RarError, TypeError):
  """A stage of a replay chain broke its contract (wrong outputs, or it read
  ``ctx.lookahead`` without declaring it); the message names the stage."""


class ModelError(RarError, TypeError):
  """A Flax module cannot be used by the step (e.g. its ``__call__`` lacks
  ``train=`` or, with batch norm, ``mask=``)."""


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
  "ArgumentError",
  "ConfigError",
  "StageError",
  "ModelError",
  "SweepError",
  "DataError",
  "TrainingDiverged",
  "CheckpointError",
]
