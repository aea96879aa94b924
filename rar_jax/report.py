"""Result files: atomic JSON, accuracy-matrix CSV, plots, comparison tables."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Mapping, Sequence

import numpy as np

from rar_jax import metrics as metrics_lib


def atomic_write_text(path: str, text: str) -> None:
  """Writes via a temporary file and `os.replace`, so a killed run never leaves
  a truncated file behind."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_acc_csv(path: str, acc: np.ndarray) -> None:
  """One row per (seed, after_task, on_task) cell."""
  lines = ["seed_index,after_task,on_task,accuracy"]
  for s in range(acc.shape[0]):
    for i in range(acc.shape[1]):
      for j in range(acc.shape[2]):
        lines.append(f"{s},{i},{j},{acc[s, i, j]:.6f}")
  atomic_write_text(path, "\n".join(lines) + "\n")


def plot_accuracy(path: str, acc: np.ndarray, title: str) -> None:
  """Heat map of the seed-mean accuracy matrix and average accuracy per task."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  mean = acc.mean(axis=0)
  curve = metrics_lib.average_accuracy_curve(acc)
  t = mean.shape[0]
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
  im = ax0.imshow(mean, vmin=0, vmax=1, cmap="viridis")
  for i in range(t):
    for j in range(t):
      ax0.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
  ax0.set(xlabel="evaluated on task", ylabel="after training task", title="accuracy (seed mean)",
          xticks=range(t), yticks=range(t))
  fig.colorbar(im, ax=ax0)
  xs = np.arange(1, t + 1)
  m = curve.mean(axis=0)
  se = 2 * curve.std(axis=0, ddof=1) / np.sqrt(len(curve)) if len(curve) > 1 else 0 * m
  ax1.errorbar(xs, m, yerr=se, marker="o", capsize=3)
  ax1.set(xlabel="tasks learned", ylabel="average accuracy on seen tasks", ylim=(0, 1),
          title="average accuracy (± 2SE)", xticks=xs)
  fig.suptitle(title)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def _pm(summary: Mapping) -> str:
  se2 = summary["se2"]
  return f"{summary['mean']:.3f} ± {se2:.3f}" if se2 is not None else f"{summary['mean']:.3f}"


def comparison_table(results: Sequence[Mapping]) -> str:
  """A Markdown table, one row per method's metrics dict."""
  rows = ["| method | final avg accuracy (± 2SE) | forgetting (± 2SE) | seeds | steps/s |",
          "| --- | --- | --- | --- | --- |"]
  for r in results:
    rows.append(f"| {r['method']} | {_pm(r['final_avg_accuracy'])} | "
                f"{_pm(r['final_forgetting'])} | {r['num_seeds']} | {r['steps_per_second']:.0f} |")
  return "\n".join(rows)


def sweep_table(result: Mapping) -> str:
  """A Markdown table of a sweep's cells, best first."""
  cells = sorted(result["cells"], key=lambda r: -r["final_avg_accuracy"]["mean"])
  rows = [f"{result['method']}, {result['num_seeds']} seeds per cell, {result['eval_split']} split",
          "", "| cell | final avg accuracy (± 2SE) | forgetting (± 2SE) |", "| --- | --- | --- |"]
  for r in cells:
    name = ",".join(f"{k}={v:g}" for k, v in r["overrides"].items())
    rows.append(f"| {name} | {_pm(r['final_avg_accuracy'])} | {_pm(r['final_forgetting'])} |")
  return "\n".join(rows)
