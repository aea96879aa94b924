"""Typed results with one schema: a method's result holds one or more sweep
cells (a single run is a sweep of one cell); its JSON form (metrics.json) puts
the best cell's numbers at the top level beside the list of cells."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from rar_jax.evaluation import continual as continual_lib
from rar_jax.evaluation import metrics as metrics_lib


def rank(cell: Mapping) -> tuple:
  """How cells (metrics.json's ``cells``) are ranked, best last: clean cells
  (no diverged seed) above the others, then by mean final average accuracy."""
  return (not cell.get("diverged_seeds"), cell["final_avg_accuracy"]["mean"])


@dataclasses.dataclass(frozen=True)
class CellResult:
  method: str
  overrides: Dict[str, float]
  seeds: List[int]
  acc: np.ndarray  # [seeds, tasks, tasks]: accuracy on task j after training task i
  info: Dict[str, Any]  # dataset, data_source, eval_split, steps_per_task, ...
  diverged_seeds: List[int] = dataclasses.field(default_factory=list)  # loss went NaN/Inf
  # Continual evaluation: accuracy[seeds, points, tasks] at info["curve_steps"]; None = off.
  curve: Optional[np.ndarray] = None
  # Blurry streams: the final accuracy [seeds, 2] on the disjoint and the blurry classes.
  class_kinds: Optional[np.ndarray] = None
  # Continual evaluation per class [seeds, points, classes], and each class's first
  # stream step [seeds, classes] (the accuracy over the classes seen so far).
  class_curve: Optional[np.ndarray] = None
  first_seen: Optional[np.ndarray] = None

  def _class_kinds(self) -> dict:
    """A blurry stream's final accuracy on its disjoint and on its blurry classes
    (None where it has no class of that kind)."""
    assert self.class_kinds is not None
    out = {}
    for k, name in enumerate(("disjoint", "blurry")):
      v = self.class_kinds[:, k]
      out[f"final_accuracy_{name}_classes"] = (
        None if np.isnan(v).all() else metrics_lib.summarize(v)
      )
    return out

  def continual(self) -> Optional[dict]:
    """metrics.json's ``continual`` object (None when continual evaluation is off)."""
    if self.curve is None:
      return None
    steps = np.asarray(self.info["curve_steps"])
    task_ends = self.info["steps_per_task"] * np.arange(1, self.acc.shape[-1] + 1)
    return {
      "eval_every": self.info["eval_every"],
      "eval_samples_per_task": self.info["eval_samples_per_task"],
      "steps": steps.tolist(),
      "task_ends": task_ends.tolist(),
      "accuracy": self.curve.tolist(),
      **continual_lib.summaries(self.curve, steps, task_ends),
      **self._seen_classes(steps),
    }

  def _seen_classes(self, steps) -> dict:
    """The average accuracy over the classes seen so far, per point, and its mean."""
    if self.class_curve is None or self.first_seen is None:
      return {}
    seen = continual_lib.average_seen_class_accuracy(self.class_curve, steps, self.first_seen)
    return {
      "accuracy_seen_classes": seen.tolist(),
      "aaa_seen_classes": metrics_lib.summarize(seen.mean(-1)),
    }

  @property
  def final_avg_accuracy(self) -> dict:
    return metrics_lib.summarize(metrics_lib.final_average_accuracy(self.acc))

  def to_dict(self) -> dict:
    num_tasks = self.acc.shape[-1]
    return {
      "method": self.method,
      **{
        k: self.info[k]
        for k in ("dataset", "data_source", "eval_split", "eval_classifier", "eval_protocol")
      },
      "ema_decay": self.info.get("ema_decay", 0.0),  # > 0: a moving average was evaluated
      "overrides": self.overrides,
      "num_seeds": len(self.seeds),
      "seeds": self.seeds,
      "num_tasks": num_tasks,
      "steps": num_tasks * self.info["steps_per_task"],
      "steps_per_task": self.info["steps_per_task"],
      "dropped_samples_per_seed": self.info["dropped_samples_per_seed"],
      "acc_matrix": self.acc.tolist(),
      "final_avg_accuracy": self.final_avg_accuracy,
      "final_forgetting": metrics_lib.summarize(metrics_lib.final_forgetting(self.acc)),
      "avg_accuracy_curve": metrics_lib.average_accuracy_curve(self.acc).mean(0).tolist(),
      "diverged_seeds": self.diverged_seeds,
      **({"continual": self.continual()} if self.curve is not None else {}),
      **({"stream": self.info["stream"]} if "stream" in self.info else {}),
      **(self._class_kinds() if self.class_kinds is not None else {}),
    }


@dataclasses.dataclass(frozen=True)
class MethodResult:
  method: str
  sweep: str  # the config's sweep spec ("" = one cell)
  cells: List[CellResult]
  timing: Dict[str, Any]  # train/compile seconds, steps per second, execution choices

  @property
  def best(self) -> CellResult:
    """The cell with the highest mean final average accuracy among those where
    no seed diverged (if every cell has a diverged seed, among all)."""
    return max(
      self.cells,
      key=lambda c: rank(
        {"diverged_seeds": c.diverged_seeds, "final_avg_accuracy": c.final_avg_accuracy}
      ),
    )

  def to_dict(self) -> dict:
    return {
      **self.best.to_dict(),
      "sweep": self.sweep,
      "best_cell": self.best.overrides,
      "cells": [c.to_dict() for c in self.cells],
      **self.timing,
    }


def is_sweep(result: dict) -> bool:
  """Whether a metrics dict (`MethodResult.to_dict`) holds several cells."""
  return len(result.get("cells", ())) > 1
