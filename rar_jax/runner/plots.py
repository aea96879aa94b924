"""Pictures of streams and of continual evaluation: ``continual.png`` (accuracy
during the stream) and ``stream.png`` (which class each step of a stream holds)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from rar_jax.evaluation import continual as continual_lib
from rar_jax.runner.report import _mean_and_2se, _pyplot, _save, _wrap


def continual_figure(results: Mapping[str, Mapping], title: str):
  """Continual evaluation (metrics.json's ``continual`` per method): the average
  accuracy over the tasks seen, and the accuracy on task 1, against the stream
  step; seed mean with a ± 2SE band, one line per method, task switches dashed.
  The dips right after each switch are the stability gap."""
  plt = _pyplot()
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  ends = np.zeros(0, np.int64)
  for name, r in results.items():
    c = r["continual"]
    steps, ends = np.asarray(c["steps"]), np.asarray(c["task_ends"])
    acc = np.asarray(c["accuracy"], np.float64)
    for ax, curves in (
      (ax0, continual_lib.average_seen_accuracy(acc, steps, ends)),
      (ax1, acc[:, :, 0]),
    ):
      m, se2 = _mean_and_2se(curves)
      (line,) = ax.plot(steps, m, label=name, linewidth=1.2)
      ax.fill_between(steps, m - se2, m + se2, color=line.get_color(), alpha=0.2, linewidth=0)
  for ax, what in ((ax0, "average accuracy on seen tasks"), (ax1, "accuracy on task 1")):
    for end in ends[:-1]:
      ax.axvline(end, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="stream step (minibatches)", title=what, ylim=(0, 1))
    ax.grid(alpha=0.3)
  ax0.set_ylabel("accuracy")
  ax0.legend(title="method (± 2SE band)", fontsize=8)
  fig.suptitle(_wrap(title + "; dashed: task switches", 110))
  fig.tight_layout()
  return fig


def plot_continual(path: str, results: Mapping[str, Mapping], title: str) -> None:
  _save(continual_figure(results, title), path)


def stream_figure(labels: np.ndarray, task_of_class: np.ndarray, batch_size: int, title: str):
  """Each sample of one seed's stream (``labels[tasks, steps * batch]``) as a
  dot at (stream step, class), coloured by its class's home task; segment
  boundaries dashed. Sharp boundaries show as blocks, blurry ones as classes
  that reach into other segments."""
  plt = _pyplot()
  tasks, per_task = labels.shape
  y = labels.reshape(-1)
  steps = np.arange(len(y)) / batch_size
  fig, ax = plt.subplots(figsize=(10, 3.6))
  cmap = plt.get_cmap("tab10")
  colours = [cmap(int(task_of_class[c]) % 10) for c in y]
  ax.scatter(steps, y, c=colours, s=2, marker="|", linewidths=0.6)
  for t in range(1, tasks):
    ax.axvline(t * per_task / batch_size, color="grey", linestyle="--", linewidth=0.8)
  ax.set(
    xlabel="stream step (minibatches)",
    ylabel="class",
    yticks=range(int(task_of_class.shape[0])),
    title=_wrap(title + "; colour: home task, dashed: segment boundaries", 110),
  )
  ax.set_xlim(0, len(y) / batch_size)
  fig.tight_layout()
  return fig


def plot_stream(path: str, labels, task_of_class, batch_size: int, title: str) -> None:
  _save(stream_figure(np.asarray(labels), np.asarray(task_of_class), batch_size, title), path)
