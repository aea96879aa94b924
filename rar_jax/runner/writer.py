"""Metrics as TensorBoard event files and JSON lines, the same values in both.

`tensorboard --logdir <workdir>` shows the loss curves (per chunk of
``log_every_steps``) and the accuracy per task; ``metrics.jsonl`` holds the
same numbers for scripts. Only process 0 writes (`MetricWriter(enabled=False)`
elsewhere).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional, TextIO


class MetricWriter:
  """``write_scalars(step, {"train/loss_current": ..., ...})``; step = minibatch
  steps trained so far (the x axis of every curve)."""

  def __init__(self, logdir: str, enabled: bool = True):
    self.logdir, self.enabled = logdir, enabled
    self._tb: Optional[Any] = None
    self._jsonl: Optional[TextIO] = None
    if enabled:
      from tensorboardX import SummaryWriter  # imports protobuf: only where it writes

      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir, flush_secs=30)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._tb is None or self._jsonl is None:
      return
    values = {k: float(v) for k, v in scalars.items()}
    for tag, v in values.items():
      self._tb.add_scalar(tag, v, step)
    # JSON has no NaN: a non-finite value is written as null.
    line = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
    self._jsonl.write(json.dumps(line) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._tb is not None and self._jsonl is not None:
      self._tb.close()
      self._jsonl.close()
      self._tb = self._jsonl = None
