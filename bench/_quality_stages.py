"""The stages of `quality.py` that are not in its ``main()``, and what every
stage runs through: one run into ``bench/results/quality/<name>/``, recorded in
``bench/results/quality/runs_*.jsonl`` (`_store`) and ``quality.jsonl``."""

import json
import os

import _store
from _common import quiet
from _quality_plan import (
  EMA_TESTS,
  EMA_TUNING,
  GOAL_TESTS,
  GOAL_TUNING,
  LR_GRIDS,
  LR_METHODS,
  NCM_TESTS,
  NCM_TUNING,
  VARIANT_CELLS,
  ema_test_name,
  ncm_test_name,
  variant_name,
)

from rar_jax.runner import experiment, results
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "results")

RUN_BATCHING = "auto"  # set from --run_batching


def base(config_module="split_fashion_mnist", **overrides):
  c = load_file(os.path.join(ROOT, "configs", config_module + ".py"))
  c.update(progress=False, plot=True, overwrite=True, keep_checkpoints=0, run_batching=RUN_BATCHING)
  c.update(overrides)
  return c


def emit(name, result):
  line = {"bench": "quality", "name": name}
  keys = (
    "method",
    "num_seeds",
    "final_avg_accuracy",
    "final_forgetting",
    "overrides",
    "steps",
    "train_seconds",
    "steps_per_second",
    "eval_split",
  )
  line.update({k: result[k] for k in keys if k in result})
  for k in ("final_avg_accuracy", "final_forgetting"):
    if k in line:
      line[k] = {"mean": line[k]["mean"], "se2": line[k]["se2"]}
  if len(result.get("cells", ())) > 1:
    line["best_cell"] = result["best_cell"]
    line["cells"] = [
      {
        "overrides": c["overrides"],
        "final_avg_accuracy": c["final_avg_accuracy"]["mean"],
        "se2": c["final_avg_accuracy"]["se2"],
        "diverged_seeds": c.get("diverged_seeds", []),
      }
      for c in result["cells"]
    ]
  print(json.dumps(line), flush=True)
  with open(os.path.join(OUT, "quality.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")


def run(name, config_module="split_fashion_mnist", **overrides):
  config = base(config_module, **overrides)
  result = quiet(experiment.train_and_evaluate)(config, os.path.join(OUT, "quality", name))
  _store.pack("quality", name)
  for r in result.values():
    emit(name, r)
  return result


def done(name):
  """Whether the run ``name`` finished (recorded, or its metrics.json exists)."""
  return _store.done("quality", name)


def tuned(method, names=None):
  """The best cell by validation accuracy over the method's tuning runs."""
  cells = []
  for name in names or (f"tune_{method}", f"tune_fine_{method}"):
    record = _store.find("quality", name)
    if record:
      cells += record["metrics"]["cells"]
  if not cells:
    raise SystemExit(f"run the tune stage first (no tuning results for {method})")
  return max(cells, key=results.rank)["overrides"]


def learning_rate_stage(skip_done, methods=LR_METHODS, memories=(200,)):
  """Tunes the learning rate (with RAR's keys) for ER, ER-RAR, ER-ACE and
  ER-ACE-RAR on the validation split (10 seeds per cell, memory 200), then runs
  each method's best cell on the test set: 20 seeds at memory 200, 10 at 500."""
  for method in methods:
    name = f"tune_lr_{method}"
    if skip_done and done(name):
      continue
    run(
      name,
      methods=method,
      eval_split="validation",
      num_seeds=10,
      iter_fgsm=5,
      alpha_fgsm=None,
      sweep=LR_GRIDS[method],
    )
  for mem in memories:
    for method in methods:
      name = "_".join(["test", f"m{mem}", method, "lr_tuned"])
      if skip_done and done(name):
        continue
      run(
        name,
        methods=method,
        mem_size=mem,
        num_seeds=20 if mem == 200 else 10,
        iter_fgsm=5,
        alpha_fgsm=None,
        **tuned(method, [f"tune_lr_{method}"]),
      )


def attack_steps_stage():
  """ER-RAR's attack steps at the tuned learning rate, beta and epsilon (alpha =
  epsilon / iter_fgsm per step, as in the tuning): validation, 10 seeds per
  cell; the best cell on the test set if it is not 5 steps. Exploratory: the
  best cell is taken as is, even when its validation margin is inside the noise."""
  best = tuned("er_rar", ["tune_lr_er_rar"])
  run(
    "tune_attack_steps_er_rar",
    methods="er_rar",
    eval_split="validation",
    num_seeds=10,
    alpha_fgsm=None,
    sweep="iter_fgsm=2,5,10",
    **best,
  )
  steps = tuned("er_rar", ["tune_attack_steps_er_rar"])["iter_fgsm"]
  if steps != 5:
    run(
      "test_m200_er_rar_attack_steps_tuned",
      methods="er_rar",
      num_seeds=20,
      alpha_fgsm=None,
      iter_fgsm=steps,
      **best,
    )


def variant_stage(skip_done, variants):
  """Each of ``variants`` at the retune stage's best ER-RAR cell for each memory, on the
  validation split, 10 seeds (paired with the tuning runs' row of that cell)."""
  for mem, names in VARIANT_CELLS.items():
    cell = tuned("er_rar", names)
    sweep = ";".join(f"{k}={v}" for k, v in cell.items())  # carries the cell to the results
    for variant, overrides in variants.items():
      name = variant_name(mem, variant)
      if not (skip_done and done(name)):
        run(
          name,
          methods="er_rar",
          mem_size=mem,
          eval_split="validation",
          num_seeds=10,
          iter_fgsm=5,
          alpha_fgsm=None,
          sweep=sweep,
          **overrides,
        )


def goal_stage(skip_done, phase="all"):
  """The longer tuning (``GOAL_TUNING``), then each row of ``GOAL_TESTS`` on
  the test set with its best validation cell (``phase``: tune | test | all)."""
  common = dict(eval_split="validation", num_seeds=10, iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in GOAL_TUNING.items():
      if not (skip_done and done(name)):
        run(name, **common, **overrides)
  if phase in ("test", "all"):
    for name, method, mem, seeds, names in GOAL_TESTS:
      if not (skip_done and done(name)):
        best = tuned(method, names)
        run(
          name, methods=method, mem_size=mem, num_seeds=seeds, iter_fgsm=5, alpha_fgsm=None, **best
        )


def ncm_stage(skip_done, phase="all"):
  """``NCM_TUNING`` with the NCM classifier on the validation split,
  then each ``NCM_TESTS`` row on the test set with both classifiers."""
  common = dict(iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in NCM_TUNING.items():
      if not (skip_done and done(name)):
        run(
          name,
          eval_classifier="ncm",
          eval_split="validation",
          num_seeds=10,
          **common,
          **overrides,
        )
  if phase in ("test", "all"):
    for mem, method, seeds, tuning in NCM_TESTS:
      best = tuned(method, [tuning])
      for classifier in ("ncm", "head"):
        name = ncm_test_name(mem, method, classifier)
        if not (skip_done and done(name)):
          run(
            name,
            methods=method,
            mem_size=mem,
            num_seeds=seeds,
            eval_classifier=classifier,
            **common,
            **best,
          )


def ema_stage(skip_done, phase="all", names=None):
  """``EMA_TUNING`` on the validation split (``names``: only those
  runs), then each ``EMA_TESTS`` row on the test set with the averaged weights
  ("ema") and with the current ones ("plain": the same cell at ema_decay 0)."""
  common = dict(iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in EMA_TUNING.items():
      if names and name not in names or skip_done and done(name):
        continue
      run(name, eval_split="validation", num_seeds=10, **common, **overrides)
  if phase in ("test", "all"):
    for mem, method, seeds, tuning in EMA_TESTS:
      for weights in ("ema", "plain"):
        name = ema_test_name(mem, method, weights)
        if names and name not in names or skip_done and done(name):
          continue
        best = tuned(method, [tuning])
        keys = dict(best, ema_decay=best["ema_decay"] if weights == "ema" else 0.0)
        run(name, methods=method, mem_size=mem, num_seeds=seeds, **common, **keys)
