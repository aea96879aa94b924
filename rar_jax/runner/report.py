"""Result files: atomic JSON, accuracy-matrix CSV, plots, comparison tables."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from typing import Mapping, Sequence

import numpy as np

from rar_jax.errors import ArgumentError
from rar_jax.evaluation import metrics as metrics_lib
from rar_jax.runner import results as results_lib
from rar_jax.runner import sweep as sweep_lib


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


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only: no display needed
  import matplotlib.pyplot as plt

  return plt


def _mean_and_2se(curves: np.ndarray):
  """Seed mean and 2 x standard error over axis 0 (zero for one seed)."""
  mean = curves.mean(axis=0)
  if len(curves) < 2:
    return mean, np.zeros_like(mean)
  return mean, metrics_lib.two_se(curves)


def _save(fig, path: str) -> None:
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  _pyplot().close(fig)
  os.replace(tmp, path)


def accuracy_figure(acc: np.ndarray, title: str):
  """Heat map of the seed-mean accuracy matrix and average accuracy per task.
  Tasks are numbered from 1, as the console prints them."""
  plt = _pyplot()
  mean = acc.mean(axis=0)
  t = mean.shape[0]
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
  cmap = plt.get_cmap("viridis")
  im = ax0.imshow(mean, vmin=0, vmax=1, cmap=cmap)
  for i in range(t):
    for j in range(t):
      # viridis turns yellow above ~0.6: dark text there, white below.
      color = "black" if mean[i, j] > 0.6 else "white"
      ax0.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center", color=color, fontsize=8)
  names = [str(k + 1) for k in range(t)]
  ax0.set(
    xlabel="evaluated on task",
    ylabel="after training task",
    title="accuracy (seed mean)",
    xticks=range(t),
    yticks=range(t),
    xticklabels=names,
    yticklabels=names,
  )
  fig.colorbar(im, ax=ax0)
  xs = np.arange(1, t + 1)
  m, se2 = _mean_and_2se(metrics_lib.average_accuracy_curve(acc))
  ax1.errorbar(xs, m, yerr=se2, marker="o", capsize=3)
  ax1.set(
    xlabel="tasks learned",
    ylabel="average accuracy on seen tasks",
    ylim=(0, 1),
    title="average accuracy (± 2SE)",
    xticks=xs,
  )
  fig.suptitle(_wrap(title, 90))
  fig.tight_layout()
  return fig


def plot_accuracy(path: str, acc: np.ndarray, title: str) -> None:
  _save(accuracy_figure(acc, title), path)


def comparison_figure(accs: Mapping[str, np.ndarray], title: str):
  """Average accuracy on the tasks seen so far after each task, one line per
  method (seed mean) with a ± 2SE band."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, acc in accs.items():
    m, se2 = _mean_and_2se(metrics_lib.average_accuracy_curve(acc))
    xs = np.arange(1, len(m) + 1)
    (line,) = ax.plot(xs, m, marker="o", label=name)
    ax.fill_between(xs, m - se2, m + se2, color=line.get_color(), alpha=0.2, linewidth=0)
  t = max(len(metrics_lib.average_accuracy_curve(a)[0]) for a in accs.values())
  ax.set(
    xlabel="tasks learned",
    ylabel="average accuracy on seen tasks",
    ylim=(0, 1),
    xticks=np.arange(1, t + 1),
    title=_wrap(title, 70),
  )
  ax.grid(alpha=0.3)
  ax.legend(title="method (± 2SE band)")
  fig.tight_layout()
  return fig


def plot_comparison(path: str, accs: Mapping[str, np.ndarray], title: str) -> None:
  _save(comparison_figure(accs, title), path)


def plus_minus(summary: Mapping) -> str:
  """``"mean ± 2SE"`` of a `rar_jax.evaluation.metrics.summarize` dict (mean alone: one seed)."""
  se2 = summary.get("se2")
  return f"{summary['mean']:.3f} ± {se2:.3f}" if se2 is not None else f"{summary['mean']:.3f}"


def evaluation_words(
  eval_split: str, eval_classifier: str = "head", eval_protocol: str = "class", ema_decay=0.0
) -> str:
  """How a result was evaluated, for titles: ``"test split"``, plus the
  classifier, protocol and averaged weights where they are not the defaults
  (their numbers do not compare with the defaults')."""
  words = [f"{eval_split} split"]
  if eval_classifier == "ncm":
    words.append("nearest-class-mean classifier")
  if eval_protocol == "task":
    words.append("task-incremental")
  if isinstance(ema_decay, str):  # a sweep over it: the cells name theirs
    words.append(f"ema_decay {ema_decay}")
  elif ema_decay:
    words.append(f"weights averaged (ema_decay {ema_decay:g})")
  return ", ".join(words)


def evaluated_decay(result: Mapping):
  """The ``ema_decay`` every cell of a metrics dict was evaluated with, or
  ``"per cell"`` where a sweep varies it (for `evaluation_words`)."""
  decays = {c.get("ema_decay", 0.0) for c in result.get("cells", [result])}
  return decays.pop() if len(decays) == 1 else "per cell"


def format_rate(steps_per_second: float) -> str:
  """Steps per second as a person reads them: whole numbers from 10 up, two
  significant digits below (a conv net on the CPU runs at 0.23, not "0")."""
  return f"{steps_per_second:.0f}" if steps_per_second >= 10 else f"{steps_per_second:.2g}"


CONTINUAL_COLUMNS = (("aaa", "AAA"), ("wc_acc", "WC-ACC"), ("stability_gap", "stability gap"))


def comparison_table(results: Sequence[Mapping]) -> str:
  """A Markdown table, one row per method's metrics dict; with continual
  evaluation also AAA, WC-ACC and the stability gap (docs/running.md)."""
  continual = all("continual" in r for r in results)
  extra = [f" {name} (± 2SE) |" for _, name in CONTINUAL_COLUMNS] if continual else []
  rows = [
    "| method | final avg accuracy (± 2SE) | forgetting (± 2SE) |"
    + "".join(extra)
    + " seeds | steps/s |",
    "| --- | --- | --- |" + " --- |" * len(extra) + " --- | --- |",
  ]
  for r in results:
    cells = [
      plus_minus(r["continual"][k]) if r["continual"][k] is not None else "-"
      for k, _ in (CONTINUAL_COLUMNS if continual else ())
    ]
    rows.append(
      f"| {r['method']} | {plus_minus(r['final_avg_accuracy'])} | "
      f"{plus_minus(r['final_forgetting'])} | "
      + "".join(f"{c} | " for c in cells)
      + f"{r['num_seeds']} | {format_rate(r['steps_per_second'])} |"
    )
  # Say what the speed counts: it is easily read as per seed, or as wall time.
  rows += [
    "",
    "steps/s: minibatch steps per second of training time (compilation, evaluation",
    "and checkpoints excluded), all seeds of a method advancing together, as the",
    "progress lines show it (seed-steps per second: steps/s x seeds).",
  ]
  return "\n".join(rows)


def sweep_table(result: Mapping) -> str:
  """A Markdown table of a sweep's cells, best first (cells with a diverged
  seed after the others, as `rar_jax.runner.results.MethodResult.best` ranks them)."""
  cells = sorted(result["cells"], key=results_lib.rank, reverse=True)
  rows = [
    f"{result['method']}, {result['num_seeds']} seeds per cell, "
    + evaluation_words(
      result["eval_split"],
      result.get("eval_classifier", "head"),
      result.get("eval_protocol", "class"),
      evaluated_decay(result),
    ),
    "",
    "| cell | final avg accuracy (± 2SE) | forgetting (± 2SE) |",
    "| --- | --- | --- |",
  ]
  for r in cells:
    name = sweep_lib.cell_name(r["overrides"])
    acc, forgetting = plus_minus(r["final_avg_accuracy"]), plus_minus(r["final_forgetting"])
    bad = r.get("diverged_seeds") or []
    if bad:
      acc += f" (diverged: seed{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))})"
    rows.append(f"| {name} | {acc} | {forgetting} |")
  return "\n".join(rows)


def _label(targets: np.ndarray) -> str:
  """A hard label as its class; a MixUp target as its two classes and weights."""
  order = np.argsort(-targets)
  if targets[order[0]] > 0.999:
    return f"class {order[0]}"
  return f"{order[0]} ({targets[order[0]]:.2f}) + {order[1]} ({targets[order[1]]:.2f})"


def _show(ax, image: np.ndarray, **kwargs) -> None:
  ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, **kwargs)
  ax.set_xticks([])
  ax.set_yticks([])


def rar_samples_figure(preview: Mapping[str, np.ndarray], num: int, title: str):
  """Columns: replay samples (first the ones RAR moved). Rows: the sample,
  its perturbed version, the difference (red up, blue down, scaled to the
  largest change shown), and the incoming sample it was pushed towards."""
  plt = _pyplot()
  order = np.argsort(~(preview["found"] & preview["mask"]), kind="stable")
  cols = [i for i in order if preview["mask"][i]][:num]
  if not cols:
    raise ArgumentError("the replay draw is empty: nothing to show")
  diff = preview["x_adv"] - preview["x_mem"]
  scale = max(float(np.abs(diff[cols]).max()), 1e-12)
  fig, axes = plt.subplots(4, len(cols), figsize=(1.7 * len(cols), 7.4), squeeze=False)
  gray = dict(cmap="gray", vmin=0.0, vmax=1.0)
  for c, i in enumerate(cols):
    j = int(preview["nearest"][i])
    _show(axes[0, c], preview["x_mem"][i], **gray)
    axes[0, c].set_title(_label(preview["targets"][i]), fontsize=7)
    _show(axes[1, c], np.clip(preview["x_adv"][i], 0, 1), **gray)
    _show(axes[2, c], diff[i].mean(-1, keepdims=True), cmap="RdBu_r", vmin=-scale, vmax=scale)
    axes[2, c].set_title(f"max |d| {np.abs(diff[i]).max():.3f}", fontsize=7)
    if preview["found"][i]:
      _show(axes[3, c], preview["x"][j], **gray)
      axes[3, c].set_title(f"class {int(preview['y'][j])}", fontsize=7)
    else:
      axes[3, c].axis("off")
      axes[3, c].set_title("no neighbour", fontsize=7)
  for r, name in enumerate(("replay", "perturbed", "difference", "pushed towards")):
    axes[r, 0].set_ylabel(name, fontsize=8)
  fig.suptitle(_wrap(title, int(13 * 1.7 * len(cols))), fontsize=9)
  fig.tight_layout()
  return fig


def plot_rar_samples(path: str, preview: Mapping[str, np.ndarray], num: int, title: str) -> None:
  """`rar_samples_figure` as a PNG (``preview``: `rar_jax.core.step.make_rar_preview`'s
  output plus the incoming batch as ``x`` and ``y``)."""
  _save(rar_samples_figure(preview, num, title), path)


SENSITIVITY_KEYS = ("beta_coef", "epsilon_fgsm")


def sensitivity_grid(result: Mapping):
  """``(betas, epsilons, accuracy [beta, eps])`` of a sweep over beta_coef and
  epsilon_fgsm (the paper's sensitivity analysis): mean final average accuracy
  per cell, the best over any other swept key; None without both keys or with
  one (beta, epsilon) pair only (a one-cell map shows nothing). Cells with a
  diverged run never count: a pair whose cells all diverged is NaN."""
  cells = result.get("cells", ())
  if not cells or not all(k in cells[0]["overrides"] for k in SENSITIVITY_KEYS):
    return None
  betas = sorted({c["overrides"]["beta_coef"] for c in cells})
  epss = sorted({c["overrides"]["epsilon_fgsm"] for c in cells})
  if len(betas) * len(epss) < 2:
    return None
  grid = np.full((len(betas), len(epss)), np.nan)
  for c in cells:
    if c.get("diverged_seeds"):
      continue
    i, j = betas.index(c["overrides"]["beta_coef"]), epss.index(c["overrides"]["epsilon_fgsm"])
    grid[i, j] = np.fmax(grid[i, j], c["final_avg_accuracy"]["mean"])
  return betas, epss, grid


def _wrap(title: str, width: int) -> str:
  """A figure title in lines of at most ``width`` characters (matplotlib clips,
  it does not wrap); lines already in it are kept."""
  return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def sensitivity_figure(result: Mapping, title: str):
  plt = _pyplot()
  betas, epss, grid = sensitivity_grid(result)
  others = sorted(set(result["cells"][0]["overrides"]) - set(SENSITIVITY_KEYS))
  fig, ax = plt.subplots(figsize=(1.2 * len(epss) + 3, 0.8 * len(betas) + 2))
  im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
  for i in range(len(betas)):
    for j in range(len(epss)):
      ax.text(
        j,
        i,
        "diverged" if np.isnan(grid[i, j]) else f"{grid[i, j]:.3f}",
        ha="center",
        va="center",
        fontsize=8,
        # NaN cells are left blank (white) by imshow.
        color="black" if not grid[i, j] <= np.nanmean(grid) else "white",
      )
  ax.set(
    xticks=range(len(epss)),
    yticks=range(len(betas)),
    xlabel="epsilon_fgsm",
    ylabel="beta_coef",
    xticklabels=[f"{e:g}" for e in epss],
    yticklabels=[f"{b:g}" for b in betas],
  )
  note = f" (best over {', '.join(others)})" if others else ""
  width = int(8 * (1.2 * len(epss) + 3))  # characters that fit the figure at fontsize 9
  ax.set_title(_wrap(f"{title}\nfinal average accuracy, seed mean{note}", width), fontsize=9)
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  return fig


def plot_sensitivity(path: str, result: Mapping, title: str) -> None:
  """`sensitivity_figure` as a PNG."""
  _save(sensitivity_figure(result, title), path)
