"""Two processes on this machine through jax.distributed (localhost
coordinator) run a sweep as one program; the result must equal one process.

  python bench/distributed_check.py [--workdir DIR]

Prints one JSON line: whether the per-cell accuracy matrices agree.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
  "--config",
  "configs/default.py",
  "--config.methods=er_rar",
  "--config.num_seeds=2",
  "--config.sweep=beta_coef=0.1,0.5",
  "--config.progress=false",
  "--config.plot=false",
  "--config.samples_per_task=100",
]


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run(args, env):
  return subprocess.Popen(
    [sys.executable, os.path.join(ROOT, "train.py"), *ARGS, *args],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def cells(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    m = json.load(f)
  return m, {json.dumps(c["overrides"]): np.array(c["acc_matrix"]) for c in m["cells"]}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default=None)
  a = p.parse_args()
  base = a.workdir or tempfile.mkdtemp(prefix="rar_jax_dist_")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  single = run(["--workdir", f"{base}/single"], env)
  out, err = single.communicate(timeout=900)
  assert single.returncode == 0, err[-3000:]
  port = free_port()
  procs = [
    run(
      [
        "--workdir",
        f"{base}/multi",
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      env,
    )
    for i in range(2)
  ]
  outs = [q.communicate(timeout=900) for q in procs]
  for q, (_, e) in zip(procs, outs):
    assert q.returncode == 0, e[-3000:]
  m1, c1 = cells(f"{base}/single")
  m2, c2 = cells(f"{base}/multi")
  same = all(np.array_equal(c1[k], c2[k]) for k in c1)
  print(
    json.dumps(
      {
        "bench": "distributed_check",
        "processes": m2["processes"],
        "devices": m2["devices"],
        "single_process_devices": m1["devices"],
        "identical": bool(same),
        "workdir": base,
      }
    )
  )
  sys.exit(0 if same else 1)


if __name__ == "__main__":
  main()
