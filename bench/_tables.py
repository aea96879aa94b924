"""Shared by the report's table modules: the stored runs, paired differences
and Markdown tables."""

import fnmatch
import json

import _store
import numpy as np

from rar_jax.evaluation import metrics


class Runs(dict):
  """``{(run name, method): metrics}`` of one study's recorded method folders
  (`_store`), in the order of their paths; ``records`` keeps each folder's
  record (its path under the study, config and metrics)."""

  def __init__(self, study):
    super().__init__()
    self.records = _store.load(study)
    for r in self.records:
      self[(r["run"].split("/")[0], r["metrics"]["method"])] = r["metrics"]

  def config(self, run):
    """The config.json of the method folder ``run``."""
    return next(r["config"] for r in self.records if r["run"] == run)

  def matching(self, pattern):
    """The records whose folder matches ``pattern`` (a glob, one part per folder)."""
    parts = pattern.split("/")
    return [
      r
      for r in self.records
      if len(r["run"].split("/")) == len(parts)
      and all(fnmatch.fnmatchcase(a, b) for a, b in zip(r["run"].split("/"), parts))
    ]


def mean_2se(d) -> str:
  return f"{d.mean():+.3f} ± {metrics.two_se(d):.3f}"


def paired(a, b):
  """Mean ± 2SE of the per-seed difference a - b (same seeds, same streams)."""
  d = np.array(a["final_avg_accuracy"]["per_seed"]) - np.array(b["final_avg_accuracy"]["per_seed"])
  return mean_2se(d)


def combined(parts):
  """One method's runs split over seeds (``--config.seed``), as one result:
  per-seed values concatenated, mean ± 2SE recomputed."""
  parts = [p for p in parts if p]
  if not parts:
    return None
  seeds = [s for p in parts for s in p["seeds"]]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"combined: the parts share seeds ({sorted(seeds)}); they would count twice")
  same = ("method", "dataset", "eval_split", "steps", "conv_impl", "run_batching")
  # Keys that metrics.json gained later: a part written before them ran the default.
  defaults = {"eval_classifier": "head", "eval_protocol": "class", "ema_decay": 0.0}
  for key in same + tuple(defaults):
    if len({json.dumps(p.get(key, defaults.get(key))) for p in parts}) > 1:
      raise SystemExit(f"combined: the parts differ in {key}; they are not one experiment")
  out = {"seeds": [s for p in parts for s in p["seeds"]]}
  for key in ("final_avg_accuracy", "final_forgetting"):
    v = np.array([x for p in parts for x in p[key]["per_seed"]])
    out[key] = {"mean": float(v.mean()), "se2": metrics.two_se(v), "per_seed": v.tolist()}
  return out


def paired_by_seed(a, b):
  """``paired`` over the seeds both ran; also how many seeds a is ahead."""
  bs = dict(zip(b["seeds"], b["final_avg_accuracy"]["per_seed"]))
  pairs = [(x, bs[s]) for s, x in zip(a["seeds"], a["final_avg_accuracy"]["per_seed"]) if s in bs]
  if not pairs:
    return "no common seeds"
  d = np.array([x - y for x, y in pairs])
  return f"{mean_2se(d)} ({int((d > 0).sum())} of {len(d)} seeds)"


def seed_range(seeds):
  return (
    f"{min(seeds)}-{max(seeds)}" if seeds == list(range(min(seeds), max(seeds) + 1)) else str(seeds)
  )


def tuned_keys(runs, name, rar):
  """The learning rate (and RAR's keys) a test run used, from its config.json."""
  c = runs.config(name)
  keys = ("learning_rate", "beta_coef", "epsilon_fgsm", "iter_fgsm") if rar else ("learning_rate",)
  short = {"learning_rate": "lr", "beta_coef": "beta", "epsilon_fgsm": "eps", "iter_fgsm": "steps"}
  return ", ".join(f"{short[k]} {c[k]:g}" for k in keys)


def table(title, note, columns, cells):
  """A Markdown table headed "**title** (note)"; ``cells``: one list per row."""
  if not cells:
    return []
  return [
    f"\n**{title}** ({note})\n",
    "| " + " | ".join(columns) + " |",
    "| " + " | ".join("---" for _ in columns) + " |",
  ] + ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
