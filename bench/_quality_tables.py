"""The report's test-split tables of the MLP (`report.py`): methods by memory,
the learning rate and longer tunings, Mix-RAR, and the README's summary table and figure."""

import os

from _quality_plan import ncm_test_name
from _tables import Runs, paired, paired_by_seed, table, tuned_keys

from rar_jax.runner.report import plus_minus as pm


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
          tuned_keys(m, name, "rar" in method),
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


def mix_rar_table():
  """ER-mix-RAR (clean term on the unmixed rows, the paper's loss) against ER-mix:
  bench/mix_rar.py's test runs, each method at its tuned cell, same seeds."""
  runs = {}
  for record in Runs("mix_rar").matching("test_m*_*"):
    r, config = record["metrics"], record["config"]
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
