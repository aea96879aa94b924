"""Renders the results tables (docs/tables/results_tables.md, included by
docs/results.md) and the comparison figure from the per-seed files in bench/results/.

  python bench/report.py                                  # Markdown on stdout
  python bench/report.py --out docs/tables/results_tables.md --figure docs/_static/comparison.png

Runs from any directory. Quality rows read bench/results/quality/<name>/metrics.json
(per-seed values, for paired differences) and config.json; speed rows read
bench/results/speed.jsonl; NCM re-evaluations bench/results/ncm_checkpoints.jsonl.
`--sensitivity DIR` also draws the beta x epsilon heat map of every sweep over both.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

from rar_jax.evaluation import metrics
from rar_jax.runner import results
from rar_jax.runner.report import (
  evaluated_decay,
  evaluation_words,
  plot_sensitivity,
  sensitivity_grid,
)
from rar_jax.runner.report import plus_minus as pm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # quality.py beside it

from quality import (  # noqa: E402
  EMA_TESTS,
  EMA_TUNING,
  INTERNALS,
  NCM_TESTS,
  VARIANT_CELLS,
  VARIANTS,
  ema_test_name,
  ncm_test_name,
  variant_name,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.path.join(ROOT, "bench", "results")


def load_metrics():
  """{(run name, method): metrics} from every quality run directory."""
  out = {}
  for path in sorted(
    glob.glob(os.path.join(RES, "quality", "*", "**", "metrics.json"), recursive=True)
  ):
    with open(path) as f:
      m = json.load(f)
    name = os.path.relpath(path, os.path.join(RES, "quality")).split(os.sep)[0]
    out[(name, m["method"])] = m
  return out


def _mean_2se(d) -> str:
  return f"{d.mean():+.3f} ± {metrics.two_se(d):.3f}"


def paired(a, b):
  """Mean ± 2SE of the per-seed difference a - b (same seeds, same streams)."""
  d = np.array(a["final_avg_accuracy"]["per_seed"]) - np.array(b["final_avg_accuracy"]["per_seed"])
  return _mean_2se(d)


def quality_tables(m):
  lines = []
  for mem in (200, 500):
    base = f"test_m{mem}_baselines"
    rows = [
      (base, "finetune", ""),
      (base, "er", ""),
      (base, "er_mix", ""),
      (base, "mir", ""),
      (f"test_m{mem}_er_rar_tuned", "er_rar", "tuned"),
      (f"test_m{mem}_mir_rar_tuned", "mir_rar", "tuned"),
      (f"test_m{mem}_rar_paper_hp", "er_rar", "paper's MNIST values"),
    ]
    rows = [r for r in rows if (r[0], r[1]) in m]
    if not rows:
      continue
    seeds = m[rows[0][:2]]["num_seeds"]
    lines += [
      f"\n**Memory {mem}, {seeds} seeds** (test split; final average accuracy and "
      "forgetting, mean ± 2SE; paired = per-seed difference to its baseline on the "
      "same streams, mean ± 2SE)\n",
      "| method | RAR hyper-parameters | final avg accuracy | forgetting | paired vs baseline |",
      "| --- | --- | --- | --- | --- |",
    ]
    for name, method, hp in rows:
      r = m[(name, method)]
      baseline = {"er_rar": "er", "er_mix_rar": "er_mix", "mir_rar": "mir"}.get(method)
      diff = paired(r, m[(base, baseline)]) if baseline and (base, baseline) in m else ""
      if diff:
        diff = f"{diff} (vs {baseline})"
      lines.append(
        f"| {method} | {hp} | {pm(r['final_avg_accuracy'])} | "
        f"{pm(r['final_forgetting'])} | {diff} |"
      )
  abl = [
    ("ablation_er_20_replayed", "er", "ER replaying 20 buffer samples per step"),
    ("ablation_er_rar_eps0", "er_rar", "ER-RAR tuned, epsilon 0 (no perturbation)"),
    ("ablation_er_rar_label_target", "er_rar", "ER-RAR tuned, label-targeted attack (Avalanche)"),
    (
      "ablation_er_rar_avalanche_hp",
      "er_rar",
      "ER-RAR, Avalanche defaults (beta 0.5, eps 0.0314, 2 it.)",
    ),
  ]
  abl = [a for a in abl if (a[0], a[1]) in m]
  if abl:
    er = m.get(("test_m200_baselines", "er"))
    rar = m.get(("test_m200_er_rar_tuned", "er_rar"))
    lines += [
      "\n**Ablations, memory 200, 20 seeds**\n",
      "| run | final avg accuracy | forgetting | paired vs ER | paired vs ER-RAR tuned |",
      "| --- | --- | --- | --- | --- |",
    ]
    for name, method, label in abl:
      r = m[(name, method)]
      lines.append(
        f"| {label} | {pm(r['final_avg_accuracy'])} | {pm(r['final_forgetting'])} | "
        f"{paired(r, er) if er else ''} | {paired(r, rar) if rar else ''} |"
      )
  full = [("full_stream_er", "er"), ("full_stream_er_rar", "er_rar")]
  full = [f for f in full if f in m]
  if full:
    lines += [
      "\n**Full stream (all 12000 training samples per task), memory 200, 10 seeds**\n",
      "| method | final avg accuracy | forgetting | steps |",
      "| --- | --- | --- | --- |",
    ]
    for key in full:
      r = m[key]
      lines.append(
        f"| {key[1]} | {pm(r['final_avg_accuracy'])} | {pm(r['final_forgetting'])} | {r['steps']} |"
      )
    if len(full) == 2:
      lines.append(f"\nPaired ER-RAR − ER: {paired(m[full[1]], m[full[0]])}")
  return "\n".join(lines)


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
  return f"{_mean_2se(d)} ({int((d > 0).sum())} of {len(d)} seeds)"


def resnet_table(m):
  """Split Fashion-MNIST through the reduced ResNet-18 (bench/quality.py --only resnet)."""
  er = m.get(("resnet_test_s10", "er"))
  rows = [
    ("er", er),
    ("er_rar", m.get(("resnet_test_s10", "er_rar"))),
  ]
  er_joint = m.get(("resnet_test_s10_bn_joint", "er"))
  rows += [
    ("er, joint batch norm", er_joint),
    ("er_rar, joint batch norm", m.get(("resnet_test_s10_bn_joint", "er_rar"))),
  ]
  eps = "resnet_test_s10_bn_joint_eps0.3"  # epsilon 0.3 from the joint-batch-norm screen
  rows += [
    ("er_rar, joint batch norm, epsilon 0.3", m.get((eps, "er_rar"))),
  ]
  base = {method: er_joint for method, _ in rows if "joint" in method}
  cells = [
    [
      method,
      len(r["seeds"]),
      pm(r["final_avg_accuracy"]),
      pm(r["final_forgetting"]),
      paired_by_seed(r, base.get(method, er)) if er and r is not base.get(method, er) else "",
      paired_by_seed(r, er) if er and er_joint and r is er_joint else "",
    ]
    for method, r in rows
    if r
  ]
  cols = [
    "method",
    "seeds",
    "final avg accuracy",
    "forgetting",
    "paired vs ER (same batch norm)",
    "paired vs ER (group)",
  ]
  return "\n".join(table("Reduced ResNet-18, Split Fashion-MNIST", "test split", cols, cells))


def resnet_memory_table(m):
  """The ResNet at smaller memories (bench/quality.py --only resnet
  --resnet_memory M; more seed groups with --config.seed in a ``..._seedsA-B``
  folder), ER-RAR paired with ER on the same seeds, seed groups then combined."""
  cells, groups = [], {}
  for path in sorted(glob.glob(os.path.join(RES, "quality", "resnet_test_s*_m*", "er"))):
    name = os.path.basename(os.path.dirname(path))
    er, rar = m.get((name, "er")), m.get((name, "er_rar"))
    if not (er and rar):
      continue
    with open(os.path.join(path, "config.json")) as f:
      c = json.load(f)
    keys = f"beta {c['beta_coef']:g}, eps {c['epsilon_fgsm']:g}, {c['batch_norm_rows']} batch norm"
    groups.setdefault((c["mem_size"], keys), []).append((er, rar))
  for (mem, keys), runs in groups.items():
    rows = [(_seed_range(er["seeds"]), er, rar) for er, rar in runs]
    if len(runs) > 1:
      rows.append(("combined", combined([e for e, _ in runs]), combined([r for _, r in runs])))
    for seeds, er, rar in rows:
      for method, r in (("er", er), ("er_rar", rar)):
        cells.append(
          [
            mem,
            method,
            keys if r is rar else "",
            f"{len(r['seeds'])} ({seeds})",
            pm(r["final_avg_accuracy"]),
            pm(r["final_forgetting"]),
            paired_by_seed(r, er) if r is rar else "",
          ]
        )
  cols = [
    "memory",
    "method",
    "RAR keys",
    "seeds",
    "final avg accuracy",
    "forgetting",
    "paired vs ER",
  ]
  title = "Reduced ResNet-18, Split Fashion-MNIST, small memory"
  return "\n".join(table(title, "test split", cols, cells))


def resnet_screen_table(m):
  """Validation screens of the ResNet with joint batch norm: each
  folder's ER-RAR cells paired with that folder's ER, then seed groups combined."""
  cells, by_cell = [], {}
  for name in ("resnet_screen_bn_joint", "resnet_screen_bn_joint_seeds3-5"):
    er = m.get((name, "er"))
    if not er:
      continue
    by_cell.setdefault("er", []).append(er)
    for path in sorted(glob.glob(os.path.join(RES, "quality", name, "*", "metrics.json"))):
      with open(path) as f:
        r = json.load(f)
      with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        c = json.load(f)
      rar = "rar" in r["method"]
      keys = f"beta {c['beta_coef']:g}, eps {c['epsilon_fgsm']:g}, alpha {c['alpha_fgsm']:g}"
      if rar:
        by_cell.setdefault(keys, []).append(r)
      cells.append(
        [
          r["method"],
          keys if rar else "",
          _seed_range(r["seeds"]),
          pm(r["final_avg_accuracy"]),
          pm(r["final_forgetting"]),
          paired_by_seed(r, er) if rar else "",
        ]
      )
  er_all = combined(by_cell.pop("er", []))
  for keys, parts in by_cell.items():
    if len(parts) > 1 and er_all:
      r = combined(parts)
      cells.append(
        [
          "er_rar, seed groups combined",
          keys,
          _seed_range(r["seeds"]),
          pm(r["final_avg_accuracy"]),
          pm(r["final_forgetting"]),
          paired_by_seed(r, er_all),
        ]
      )
  cols = ["method", "RAR keys", "seeds", "final avg accuracy", "forgetting", "paired vs ER"]
  title = "Reduced ResNet-18, joint batch norm: validation screen"
  return "\n".join(table(title, "validation split", cols, cells))


def _seed_range(seeds):
  return (
    f"{min(seeds)}-{max(seeds)}" if seeds == list(range(min(seeds), max(seeds) + 1)) else str(seeds)
  )


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


def tuned_keys(name, rar):
  """The learning rate (and RAR's keys) a test run used, from its config.json."""
  with open(os.path.join(RES, "quality", name, "config.json")) as f:
    c = json.load(f)
  keys = ("learning_rate", "beta_coef", "epsilon_fgsm", "iter_fgsm") if rar else ("learning_rate",)
  short = {"learning_rate": "lr", "beta_coef": "beta", "epsilon_fgsm": "eps", "iter_fgsm": "steps"}
  return ", ".join(f"{short[k]} {c[k]:g}" for k in keys)


def _test_table(m, title, rows, name_base=False):
  """Test runs with the cell tuned on validation; ``rows``: (memory, label,
  method, run, base run key or None); paired against the base on shared seeds."""
  cells = []
  for mem, label, method, name, base in rows:
    r = m.get((name, method))
    if r:
      b = m.get(base) if base else None
      paired = paired_by_seed(r, b) if b else ""
      if b and name_base:
        paired += f" (vs {base[1]})"
      cells.append(
        [
          mem,
          label,
          tuned_keys(name, "rar" in method),
          len(r["seeds"]),
          pm(r["final_avg_accuracy"]),
          pm(r["final_forgetting"]),
          paired,
        ]
      )
  last = "paired" if name_base else "paired vs base"
  cols = ["memory", "method", "tuned", "seeds", "final avg accuracy", "forgetting", last]
  return "\n".join(table(title, "test split", cols, cells))


def learning_rate_table(m):
  """Test runs at the learning rate tuned on validation (bench/quality.py --only lr)."""
  base = {"er_rar": "er", "er_ace_rar": "er_ace"}

  def row(mem, label, method, name):
    b = base.get(method)
    return mem, label, method, name, (f"test_m{mem}_{b}_lr_tuned", b) if b else None

  rows = [
    row(mem, method, method, f"test_m{mem}_{method}_lr_tuned")
    for mem in (200, 500)
    for method in ("er", "er_rar", "er_ace", "er_ace_rar")
  ]
  label = "er_rar, more attack steps (exploratory)"
  rows.insert(2, row(200, label, "er_rar", "test_m200_er_rar_attack_steps_tuned"))
  return _test_table(m, "Learning rate tuned on validation", rows)


def goals_table(m):
  """Test rows of the longer tuning (bench/quality.py --only goals)."""
  er200, mix200, er500 = (
    ("test_m200_er_lr_tuned", "er"),
    ("test_m200_er_mix_lr_tuned", "er_mix"),
    ("test_m500_er_m500_tuned", "er"),
  )
  rows = [
    (200, "er_rar", "er_rar", "test_m200_er_rar_goal_tuned", er200),
    (200, "er_mix", "er_mix", mix200[0], None),
    (500, "er", "er", er500[0], None),
    (500, "er_rar", "er_rar", "test_m500_er_rar_m500_tuned", er500),
  ]
  return _test_table(m, "A longer tuning of the learning rate and RAR's keys", rows, name_base=True)


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
        tuned_keys(run_name(mem, method, evaluations[0]), "rar" in method) + tuned_suffix(main),
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


def ncm_checkpoint_table():
  """NCM on the ResNet runs' final checkpoints (bench/ncm_checkpoints.py):
  final average accuracy per memory, both classifiers, ER-RAR paired with ER."""
  path = os.path.join(RES, "ncm_checkpoints.jsonl")
  if not os.path.exists(path):
    return ""
  runs = {}  # (memory, method) -> {seed: (head, ncm)}; later lines win
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      per = runs.setdefault((r["mem_size"], r["method"]), {})
      for s, h, n in zip(r["seeds"], r["head_final_avg_accuracy"], r["ncm_final_avg_accuracy"]):
        per[s] = (h, n)

  def summary(v):
    v = np.asarray(v)
    return f"{v.mean():.3f} ± {metrics.two_se(v):.3f}"

  cells = []
  for mem in sorted({k[0] for k in runs}):
    er, rar = runs.get((mem, "er"), {}), runs.get((mem, "er_rar"), {})
    common = sorted(set(er) & set(rar))
    if not common:
      continue
    for i, name in ((0, "output layer"), (1, "NCM")):
      a = [er[s][i] for s in common]
      b = [rar[s][i] for s in common]
      d = np.subtract(b, a)
      cells.append(
        [
          mem,
          name,
          len(common),
          summary(a),
          summary(b),
          f"{_mean_2se(d)} ({int((d > 0).sum())} of {len(d)} seeds)",
        ]
      )
  cols = ["memory", "classifier", "seeds", "er", "er_rar", "er_rar − er (paired)"]
  title = "NCM on the ResNet runs' final checkpoints"
  note = "test split, final average accuracy, Split Fashion-MNIST, joint batch norm"
  return "\n".join(table(title, note, cols, cells))


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


def mix_rar_table():
  """ER-mix-RAR (clean term on the unmixed rows, the paper's loss) against ER-mix:
  bench/mix_rar.py's test runs, each method at its tuned cell, same seeds."""
  runs = {}
  for folder in glob.glob(os.path.join(RES, "mix_rar", "test_m*_*")):
    with (
      open(os.path.join(folder, "metrics.json")) as f,
      open(os.path.join(folder, "config.json")) as g,
    ):
      r, config = json.load(f), json.load(g)
    runs[(config["mem_size"], r["method"])] = r, config
  cells = []
  for mem in sorted({k[0] for k in runs}, reverse=True):
    if (mem, "er_mix") not in runs or (mem, "er_mix_rar") not in runs:
      continue
    mix = runs[(mem, "er_mix")][0]
    for method, tuned in TUNED.items():
      r, config = runs[(mem, method)]
      cells.append(
        [
          mem,
          method,
          ", ".join(f"{k} {config[k]}" for k in tuned),
          pm(r["final_avg_accuracy"]),
          pm(r["final_forgetting"]),
          paired(r, mix) if r is not mix else "",
        ]
      )
  return "\n".join(
    table(
      "ER-mix-RAR against ER-mix, the paper's Mix-RAR loss",
      "`python bench/mix_rar.py`; test split, 20 seeds, keys tuned on validation at memory "
      "200; paired = per-seed ER-mix-RAR − ER-mix, mean ± 2SE",
      ["memory", "method", "tuned keys", "final avg accuracy", "forgetting", "paired vs ER-mix"],
      cells,
    )
  )


# The keys bench/mix_rar.py tunes, per method.
TUNED = {"er_mix": ("learning_rate",), "er_mix_rar": ("learning_rate", "beta_coef", "epsilon_fgsm")}


def table(title, note, columns, cells):
  """A Markdown table headed "**title** (note)"; ``cells``: one list per row."""
  if not cells:
    return []
  return [
    f"\n**{title}** ({note})\n",
    "| " + " | ".join(columns) + " |",
    "| " + " | ".join("---" for _ in columns) + " |",
  ] + ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]


def speed_tables():
  path = os.path.join(RES, "speed.jsonl")
  if not os.path.exists(path):
    return ""
  rows = [json.loads(l) for l in open(path) if l.strip()]
  of = lambda bench: [r for r in rows if r.get("bench") == bench]
  lines = table(
    "ms per training step after compilation",
    "`bench/step_time.py`; minibatch 10, replay 10",
    [
      "model",
      "method",
      "iter_fgsm",
      "seeds",
      "batching",
      "ms per step (all seeds), min",
      "median",
      "ms per seed-step",
      "compile s",
    ],
    [
      [
        r["model"],
        r["method"],
        r["iter_fgsm"],
        r["seeds"],
        r.get("batching", "vmap"),
        f"{r['ms_per_step']:.3f}",
        f"{r.get('ms_per_step_median', r['ms_per_step']):.3f}",
        f"{r['ms_per_seed_step']:.3f}",
        r["compile_seconds"],
      ]
      for r in sorted(of("step_time"), key=lambda r: (r["model"] != "mlp", r["seeds"]))
    ],
  )
  lines += table(
    "Per-step cost against stream length",
    "`bench/stream_length.py`, 1 seed, whole run's training time / steps",
    ["method", "samples per task", "steps", "ms per step"],
    [
      [r["method"], r["samples_per_task"], r["steps"], f"{r['ms_per_step']:.3f}"]
      for r in of("stream_length")
    ],
  )
  lines += table(
    "Whole process",
    "`bench/whole_process.py`: `python train.py` on Split Fashion-MNIST, 1000 samples per "
    "task, 1 seed; start-up, data loading, compilation, training, evaluation and result files",
    [
      "method",
      "compilation cache",
      "wall s",
      "peak RSS MiB",
      "compile s",
      "train s",
      "final avg accuracy",
    ],
    [
      [
        r["method"],
        r.get("compilation_cache", "cold"),
        r["wall_seconds"],
        r["peak_rss_mib"],
        r["compile_seconds"],
        r["train_seconds"],
        r["final_avg_accuracy"],
      ]
      for r in of("whole_process")
    ],
  )
  lines += table(
    "A 16-cell sweep",
    "`bench/sweep_time.py`: ER-RAR, 4 beta x 4 epsilon, 1 seed each, Split Fashion-MNIST",
    ["devices", "one program s", "16 separate runs s", "speed-up"],
    [
      [r["devices"], r["one_program_seconds"], r["separate_runs_seconds"], f"{r['speedup']}x"]
      for r in of("sweep_time")
    ],
  )
  lines += table(
    "Side by side with Avalanche 0.6 on the same streams",
    "`bench/avalanche_compare.py`; memory 200",
    ["system", "method", "seeds", "final avg accuracy", "forgetting", "ms per seed-step"],
    [
      [
        r["system"],
        r["method"],
        r["seeds"],
        pm(r["final_avg_accuracy"]),
        pm(r["final_forgetting"]),
        f"{r['ms_per_seed_step']:.2f}",
      ]
      for r in of("avalanche_compare")
      if "method" in r
    ],
  )
  return "\n".join(lines)


# The peers, measured on the same setting and machine with their own code and settings
# (memory 200: 20 seeds, memory 500: 10 seeds; docs/results.md, "The peers"): final
# average accuracy, mean and 2SE. Their per-seed values are not stored here.
PEERS = {
  "ER (paper's code)": {200: (0.686, 0.021), 500: (0.673, 0.033)},
  "ER-RAR (paper's code)": {200: (0.695, 0.010), 500: (0.685, 0.019)},
  "ER (Avalanche)": {200: (0.673, 0.016), 500: (0.698, 0.023)},
  "ER-RAR (Avalanche `RARPlugin`)": {200: (0.719, 0.009), 500: (0.745, 0.015)},
}
SUMMARY_MEMORIES = (50, 100, 200, 500)
SUMMARY_METHODS = {"er": "ER", "er_rar": "ER-RAR", "er_ace": "ER-ACE", "er_ace_rar": "ER-ACE-RAR"}


def _summary_run(m, mem, method):
  """The output-layer test run of `method` at memory `mem` (bench/quality.py --only ncm
  trains it; the NCM-tuned cell, evaluated with the model's output layer)."""
  return m.get((ncm_test_name(mem, method, "head"), method))


def summary_table(m):
  """Methods x memory sizes (README.md, docs/results.md): rar_jax's methods, RAR's paired
  gain over ER, and the peers."""
  header = "| method | " + " | ".join(f"memory {k}" for k in SUMMARY_MEMORIES) + " |"
  lines = [header, "| --- " * (len(SUMMARY_MEMORIES) + 1) + "|"]
  for method, label in SUMMARY_METHODS.items():
    cells = [_summary_run(m, k, method) for k in SUMMARY_MEMORIES]
    lines.append(
      f"| {label} (rar_jax) | "
      + " | ".join(pm(r["final_avg_accuracy"]) if r else "" for r in cells)
      + " |"
    )
    if method == "er_rar":
      gains = []
      for k in SUMMARY_MEMORIES:
        a, b = _summary_run(m, k, "er_rar"), _summary_run(m, k, "er")
        gains.append(paired(a, b) if a and b else "")
      lines.append("| ER-RAR − ER, paired | " + " | ".join(gains) + " |")
  for label, row in PEERS.items():
    cells = [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" if k in row else "" for k in SUMMARY_MEMORIES]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def comparison_figure(m, path):
  """Final average accuracy against memory size, mean ± 2SE: rar_jax's methods as
  lines, the peers as markers (README's figure)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  for method, label in SUMMARY_METHODS.items():
    pts = [(k, _summary_run(m, k, method)) for k in SUMMARY_MEMORIES]
    pts = [(k, r["final_avg_accuracy"]) for k, r in pts if r]
    if pts:
      ax.errorbar(
        [k for k, _ in pts],
        [a["mean"] for _, a in pts],
        yerr=[a["se2"] for _, a in pts],
        marker="o",
        capsize=3,
        label=f"{label} (rar_jax)",
      )
  markers = iter("sDv^")
  for label, row in PEERS.items():
    ks = sorted(row)
    ax.errorbar(
      ks,
      [row[k][0] for k in ks],
      yerr=[row[k][1] for k in ks],
      marker=next(markers),
      linestyle="none",
      capsize=3,
      label=label.replace("`", ""),
    )
  ax.set_xscale("log")
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.set_xticks(SUMMARY_MEMORIES)
  ax.set_xticklabels([str(k) for k in SUMMARY_MEMORIES])
  ax.set_xlabel("memory (buffer size)")
  ax.set_ylabel("final average accuracy (± 2SE)")
  ax.set_title("Online Split Fashion-MNIST, MLP, output layer", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", ncol=2)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def render(m, pictures=""):
  """Every table, as Markdown."""
  text = (
    "## Quality\n\n**Summary: methods by memory size** (test split, output layer, "
    "20 seeds; 10 at memory 500)\n\n"
    + summary_table(m)
    + "\n"
    + quality_tables(m)
    + "\n"
    + learning_rate_table(m)
    + "\n"
    + goals_table(m)
    + "\n"
    + mix_rar_table()
    + "\n"
    + resnet_table(m)
    + "\n"
    + resnet_memory_table(m)
    + "\n"
    + resnet_screen_table(m)
    + "\n\n## Tuning\n"
    + variants_table(m)
    + "\n"
    + variants_table(m, INTERNALS, "RAR's internals at the best ER-RAR cell")
    + "\n"
    + ncm_table(m)
    + "\n"
    + ncm_checkpoint_table()
    + "\n"
    + ema_tuning_table(m)
    + "\n"
    + ema_table(m)
    + "\n"
    + tuning_tables(m)
  )
  if pictures:
    text += "\n\nSensitivity heat maps: " + ", ".join(
      f"`{p}`" for p in sensitivity_pictures(m, pictures)
    )
  return text + "\n\n## Speed\n" + speed_tables() + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="", help="write the Markdown here (default: stdout)")
  p.add_argument("--figure", default="", help="also draw the comparison figure (a PNG path)")
  p.add_argument("--sensitivity", default="", help="also draw the heat maps into this folder")
  a = p.parse_args()
  m = load_metrics()
  text = render(m, a.sensitivity)
  if a.out:
    header = (
      "<!-- Rendered by `python bench/report.py --out "
      f"{os.path.relpath(os.path.abspath(a.out), ROOT)}` from bench/results/; do not edit. -->\n\n"
    )
    with open(a.out, "w") as f:
      f.write(header + text)
  else:
    print(text)
  if a.figure:
    comparison_figure(m, a.figure)


if __name__ == "__main__":
  main()
