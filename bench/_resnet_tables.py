"""The report's tables of the reduced ResNet-18 (`report.py`): test rows, small
memories, validation screens, NCM on final checkpoints."""

import json
import os

import numpy as np
from _store import RESULTS as RES
from _tables import combined, mean_2se, paired_by_seed, seed_range, table

from rar_jax.evaluation import metrics
from rar_jax.runner.report import plus_minus as pm


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
  for record in m.matching("resnet_test_s*_m*/er"):
    name = record["run"].split("/")[0]
    er, rar = m.get((name, "er")), m.get((name, "er_rar"))
    if not (er and rar):
      continue
    c = record["config"]
    keys = f"beta {c['beta_coef']:g}, eps {c['epsilon_fgsm']:g}, {c['batch_norm_rows']} batch norm"
    groups.setdefault((c["mem_size"], keys), []).append((er, rar))
  for (mem, keys), runs in groups.items():
    rows = [(seed_range(er["seeds"]), er, rar) for er, rar in runs]
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
    for record in m.matching(name + "/*"):
      r, c = record["metrics"], record["config"]
      rar = "rar" in r["method"]
      keys = f"beta {c['beta_coef']:g}, eps {c['epsilon_fgsm']:g}, alpha {c['alpha_fgsm']:g}"
      if rar:
        by_cell.setdefault(keys, []).append(r)
      cells.append(
        [
          r["method"],
          keys if rar else "",
          seed_range(r["seeds"]),
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
          seed_range(r["seeds"]),
          pm(r["final_avg_accuracy"]),
          pm(r["final_forgetting"]),
          paired_by_seed(r, er_all),
        ]
      )
  cols = ["method", "RAR keys", "seeds", "final avg accuracy", "forgetting", "paired vs ER"]
  title = "Reduced ResNet-18, joint batch norm: validation screen"
  return "\n".join(table(title, "validation split", cols, cells))


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
          f"{mean_2se(d)} ({int((d > 0).sum())} of {len(d)} seeds)",
        ]
      )
  cols = ["memory", "classifier", "seeds", "er", "er_rar", "er_rar − er (paired)"]
  title = "NCM on the ResNet runs' final checkpoints"
  note = "test split, final average accuracy, Split Fashion-MNIST, joint batch norm"
  return "\n".join(table(title, note, cols, cells))
