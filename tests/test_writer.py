"""The metric writer: the same numbers in TensorBoard's event files (read back
with TensorBoard's own reader) and in JSON lines."""

import json
import math

import numpy as np

from rar_jax.runner.writer import MetricWriter


def test_scalars_reach_both_files(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  w = MetricWriter(str(tmp_path))
  w.write_scalars(5, {"train/loss": 1.5, "train/count": 10})
  w.write_scalars(10, {"train/loss": 0.25, "eval/acc": float("nan")})
  w.close()
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [
    {"step": 5, "train/loss": 1.5, "train/count": 10.0},
    {"step": 10, "train/loss": 0.25, "eval/acc": None},  # JSON has no NaN
  ]
  events = EventAccumulator(str(tmp_path))
  events.Reload()
  loss = events.Scalars("train/loss")
  assert [e.step for e in loss] == [5, 10]
  np.testing.assert_allclose([e.value for e in loss], [1.5, 0.25])
  assert math.isnan(events.Scalars("eval/acc")[0].value)


def test_a_disabled_writer_writes_nothing(tmp_path):
  w = MetricWriter(str(tmp_path / "off"), enabled=False)
  w.write_scalars(1, {"a": 1.0})
  w.close()
  assert not (tmp_path / "off").exists()


def test_a_resumed_writer_appends(tmp_path):
  for step in (1, 2):
    w = MetricWriter(str(tmp_path))
    w.write_scalars(step, {"a": float(step)})
    w.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2]
