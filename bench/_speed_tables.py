"""The report's speed tables (`report.py`), from bench/results/speed.jsonl."""

import glob
import json
import os

from _store import RESULTS as RES
from _tables import table

from rar_jax.runner.report import plus_minus as pm


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


# The sessions of `bench/paper_code_step_time.py`: one file per invocation (both
# systems alternating), with the machine and date it ran on.
PAPER_CODE_SESSIONS = {
  "paper_code_84_epyc25.jsonl": ("AMD EPYC, family 25", "2026-12-07", "84x84x3 images"),
  "paper_code_84_epyc25_b.jsonl": (
    "AMD EPYC, family 25",
    "2026-12-08",
    "84x84x3 images; rar_jax's defaults (Eigen's convolutions) at commit 2be8723",
  ),
  "paper_code_cpu_1thread_epyc25_eigen.jsonl": (
    "AMD EPYC, family 25",
    "2026-12-07",
    "XLA's default and Eigen's convolutions",
  ),
  "paper_code_84_xeon6.jsonl": (
    "Intel Xeon, family 6",
    "2026-11",
    "84x84x3 images; rar_jax at commit 753f635, before Eigen's convolutions",
  ),
  "paper_code_cpu_1thread_epyc26.jsonl": ("AMD EPYC, family 26", "2026-11-28", ""),
  "paper_code_cpu_1thread_epyc26_top_pad.jsonl": (
    "AMD EPYC, family 26",
    "2026-11-28",
    "`MALLOC_TOP_PAD_=536870912` for both systems",
  ),
  "paper_code_cpu_1thread_mlp_epyc26.jsonl": ("AMD EPYC, family 26", "2026-11-28", ""),
  "paper_code_cpu_1thread_xeon6.jsonl": ("Intel Xeon, family 6 (AVX-512, AMX)", "2026-12-05", ""),
  "paper_code_cpu_1thread_epyc25_unrolled.jsonl": ("AMD EPYC, family 25", "2026-11-28", ""),
  "paper_code_cpu_1thread_mlp_epyc25.jsonl": ("AMD EPYC, family 25", "2026-11-27/28", ""),
  "paper_code_cpu_1thread_epyc25_a.jsonl": ("AMD EPYC, family 25", "2026-11-27/28", ""),
  "paper_code_cpu_1thread_epyc25_b.jsonl": ("AMD EPYC, family 25", "2026-11-27/28", ""),
  "paper_code_cpu_1thread.jsonl": ("AMD EPYC, family 25", "2026-11-27", ""),
}
PAPER_SYSTEM = "RAR-CL (PyTorch)"


def system_of(line):
  """Which system a line of a session file timed: the paper's code names itself,
  rar_jax's lines are `bench/step_time.py`'s."""
  if line.get("system"):
    return line["system"]
  return "rar_jax" if line.get("bench") == "step_time" else None


def paper_code_pairs(path):
  """Every rar_jax line of one session file with the paper's line of the same
  model and method in that file: (rar_jax line, paper line, paper ms / rar_jax ms)."""
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  paper = {(r["model"], r["method"]): r for r in lines if system_of(r) == PAPER_SYSTEM}
  return [
    (
      r,
      paper[(r["model"], r["method"])],
      paper[(r["model"], r["method"])]["ms_per_step"] / r["ms_per_step"],
    )
    for r in lines
    if system_of(r) == "rar_jax" and (r["model"], r["method"]) in paper
  ]


def _execution(r):
  keys = [r.get("conv_impl", ""), r.get("stream_loop", "")]
  if r.get("cpu_conv_library", "default") != "default":
    keys.append(f"{r['cpu_conv_library']} convolutions")
  if r.get("batch_norm_rows") and r["model"] != "mlp":
    keys.append(f"batch norm {r['batch_norm_rows']}")
  return ", ".join(k for k in keys if k)


def _ms(r):
  return f"{r['ms_per_step']:.4g} / {r.get('ms_per_step_median', r['ms_per_step']):.4g}"


def paper_code_tables(folder=RES):
  """One table per session file: each rar_jax execution against the paper's code,
  both timed in that one run (ms per step, minimum / median of the passes)."""
  lines = []
  others = sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(folder, "paper_code_*.jsonl"))
  )
  sessions = dict(PAPER_CODE_SESSIONS)
  for name in others:  # a session not described above: the CPU its lines name
    if name not in sessions:
      with open(os.path.join(folder, name)) as f:
        cpus = {json.loads(line).get("cpu") for line in f if line.strip()} - {None}
      sessions[name] = (", ".join(sorted(cpus)) or "CPU not recorded", "date not recorded", "")
  for name, (cpu, date, note) in sessions.items():
    path = os.path.join(folder, name)
    if not os.path.exists(path):
      continue
    cells = [
      [
        {"mlp": "MLP"}.get(r["model"], "reduced ResNet-18"),
        r["method"],
        r["iter_fgsm"],
        _execution(r),
        _ms(p),
        _ms(r),
        f"{ratio:.2f}x",
      ]
      for r, p, ratio in paper_code_pairs(path)
    ]
    title = f"`bench/results/{name}`"
    threads = {p.get("threads", 1) for _, p, _ in paper_code_pairs(path)}
    how = "one pinned core, one thread each"
    if threads != {1}:
      how = f"{max(threads)} threads each (each system's default)"
    where = f"{cpu}, {how}, {date}" + (f"; {note}" if note else "")
    cols = [
      "model",
      "method",
      "attack steps",
      "rar_jax execution",
      "paper's code ms",
      "rar_jax ms",
      "paper's ms / rar_jax's",
    ]
    lines += table(title, where, cols, cells)
  return "\n".join(lines) + "\n"
