"""The report's validation and evaluation-choice tables (`report.py`): replay
rules, RAR's internals, the nearest-class-mean classifier, the moving average
of the weights, the first tuning grid, and the sensitivity heat maps."""

import os

from _quality_plan import (
  EMA_TESTS,
  EMA_TUNING,
  NCM_TESTS,
  VARIANT_CELLS,
  VARIANTS,
  ema_test_name,
  ncm_test_name,
  variant_name,
)
from _tables import paired_by_seed, table, tuned_keys

from rar_jax.runner import results
from rar_jax.runner.report import (
  evaluated_decay,
  evaluation_words,
  plot_sensitivity,
  sensitivity_grid,
)
from rar_jax.runner.report import plus_minus as pm

VARIANT_LABELS = {
  "class_balanced": "class-balanced storage",
  "whole_buffer": "replay from the whole buffer",
  "no_momentum": "no attack momentum (decay 0)",
  "opt_lr0.025": "look-ahead step opt_lr 0.025 (half the rate)",
  "opt_lr0.1": "look-ahead step opt_lr 0.1 (twice the rate)",
  "opt_lr0.2": "look-ahead step opt_lr 0.2 (four times the rate)",
  "first_layer_features": "neighbours in the first hidden layer",
  "current_attack_params": "attack through the current weights",
}


def variants_table(m, variants=VARIANTS, title="Replay rules at the best ER-RAR cell"):
  """Variants of the best ER-RAR cell of the longer tuning (bench/quality.py --only variants |
  internals), each paired with that cell's row in the tuning runs it came from."""
  cells = []
  for mem, names in VARIANT_CELLS.items():
    rows = {v: m.get((variant_name(mem, v), "er_rar")) for v in variants}
    if not all(rows.values()):
      continue
    cell = next(iter(rows.values()))["cells"][0]["overrides"]  # the one-cell sweep
    tuning = [c for n in names if (n, "er_rar") in m for c in m[(n, "er_rar")]["cells"]]
    base = next(c for c in tuning if c["overrides"] == cell)
    keys = ", ".join(f"{k} {v:g}" for k, v in cell.items())
    cells.append([mem, "the tuned cell as it is", keys, pm(base["final_avg_accuracy"]), ""])
    for v, r in rows.items():
      cells.append(
        [mem, VARIANT_LABELS[v], "", pm(r["final_avg_accuracy"]), paired_by_seed(r, base)]
      )
  cols = ["memory", "er_rar with", "cell", "final avg accuracy", "paired vs the cell"]
  return "\n".join(table(title, "validation split, 10 seeds", cols, cells))


def _paired_evaluations_table(m, tests, run_name, evaluations, tuned_suffix, cols, title):
  """Test rows trained once and evaluated two ways (``evaluations``: the run
  names' last parts, the main one first); the two pair exactly. Columns: the
  main evaluation, the other, their paired difference, and RAR's paired gain
  over its base method under each."""
  cells = []
  for mem, method, _, _ in tests:
    main, other = (m.get((run_name(mem, method, e), method)) for e in evaluations)
    if not (main and other):
      continue
    base = {"er_rar": "er", "er_ace_rar": "er_ace"}.get(method)
    b, bo = (m.get((run_name(mem, base, e), base)) if base else None for e in evaluations)
    cells.append(
      [
        mem,
        method,
        tuned_keys(m, run_name(mem, method, evaluations[0]), "rar" in method) + tuned_suffix(main),
        len(main["seeds"]),
        pm(main["final_avg_accuracy"]),
        pm(main["final_forgetting"]),
        pm(other["final_avg_accuracy"]),
        paired_by_seed(main, other),
        paired_by_seed(main, b) + f" (vs {base})" if b else "",
        paired_by_seed(other, bo) + f" (vs {base})" if bo else "",
      ]
    )
  return "\n".join(table(title, "test split", ["memory", "method", *cols], cells))


def ncm_table(m):
  """Each method's NCM-tuned cell on the test set, evaluated with the
  nearest class mean and with the output layer (bench/quality.py --only ncm);
  the same training, so the two rows pair exactly."""
  cols = [
    "tuned (NCM, validation)",
    "seeds",
    "NCM accuracy",
    "NCM forgetting",
    "output layer",
    "NCM − output layer",
    "paired, both NCM",
    "paired, both output layer",
  ]
  title = "The nearest-class-mean classifier"
  return _paired_evaluations_table(
    m, NCM_TESTS, ncm_test_name, ("ncm", "head"), lambda r: "", cols, title
  )


def ema_table(m):
  """Each method's cell tuned with a moving average of the weights
  (bench/quality.py --only ema), on the test set evaluated with the average and
  with the current weights; the same training, so the two pair exactly."""
  cols = [
    "tuned (averaged, validation)",
    "seeds",
    "averaged weights",
    "forgetting (averaged)",
    "current weights",
    "averaged − current",
    "paired, both averaged",
    "paired, both current",
  ]
  title = "A moving average of the weights (ema_decay), output layer"
  return _paired_evaluations_table(
    m,
    EMA_TESTS,
    ema_test_name,
    ("ema", "plain"),
    lambda r: f", decay {r.get('ema_decay', 0.0):g}",
    cols,
    title,
  )


def ema_tuning_table(m):
  """The ema_decay validation sweeps: per ema_decay, the best cell over the other
  keys (bench/results/quality/ema_tune_*/sweep.md has every cell)."""
  runs = [(name, method, r) for (name, method), r in sorted(m.items()) if name in EMA_TUNING]
  decays = sorted({c["overrides"]["ema_decay"] for _, _, r in runs for c in r["cells"]})
  cells = []
  for name, method, r in runs:
    row = [name, method]
    for d in decays:
      here = [c for c in r["cells"] if c["overrides"]["ema_decay"] == d]
      best = max(here, key=results.rank) if here else None
      row.append(
        f"{pm(best['final_avg_accuracy'])} (forg. {best['final_forgetting']['mean']:.3f})"
        if best
        else ""
      )
    cells.append(row)
  title = "Validation accuracy by ema_decay (best cell of the other keys)"
  cols = ["run", "method", *(f"decay {d:g}" for d in decays)]
  return "\n".join(table(title, "validation split, 10 seeds per cell", cols, cells))


def tuning_tables(m):
  lines = []
  for method in ("er_rar",):
    r = m.get((f"tune_{method}", method))
    if not r:
      continue
    lines += [
      f"\n**{method}: validation accuracy (5% held out), memory 200, "
      f"{r['num_seeds']} seeds per cell, iter_fgsm 5, alpha = epsilon / 5**\n",
      "| beta_coef \\ epsilon_fgsm | "
      + " | ".join(f"{e:g}" for e in sorted({c["overrides"]["epsilon_fgsm"] for c in r["cells"]}))
      + " |",
    ]
    eps = sorted({c["overrides"]["epsilon_fgsm"] for c in r["cells"]})
    betas = sorted({c["overrides"]["beta_coef"] for c in r["cells"]})
    lines.append("| --- " * (len(eps) + 1) + "|")
    for b in betas:
      cells = {
        c["overrides"]["epsilon_fgsm"]: c for c in r["cells"] if c["overrides"]["beta_coef"] == b
      }
      lines.append(
        f"| {b:g} | " + " | ".join(pm(cells[e]["final_avg_accuracy"]) for e in eps) + " |"
      )
    lines.append(f"\nBest cell: {r['best_cell']}")
  return "\n".join(lines)


def sensitivity_pictures(m, folder):
  """The paper's beta x epsilon heat map for every sweep over both keys (as
  train.py writes it for new sweeps), one PNG per run in `folder`; returns the paths."""
  paths = []
  for (name, method), r in sorted(m.items()):
    if sensitivity_grid(r) is None:
      continue
    os.makedirs(folder, exist_ok=True)
    png = os.path.join(folder, f"{name}_sensitivity.png")
    title = f"{method} ({name}), {r['num_seeds']} seeds per cell, " + evaluation_words(
      r["eval_split"],
      r.get("eval_classifier", "head"),
      r.get("eval_protocol", "class"),
      evaluated_decay(r),
    )
    plot_sensitivity(png, r, title)
    paths.append(png)
  return paths
