"""rar_jax against the paper's own code (RAR-CL, PyTorch): ms per training step
of the reduced ResNet-18 (32x32x3, or --input_size=84 for mini-ImageNet) or the
MLP, both measured in this run, on this machine, as JSON lines.

  python bench/paper_code_step_time.py --rar_cl_dir ../RAR-CL --torch_python /path/venv/bin/python

The paper's code needs PyTorch, NumPy, SciPy, scikit-learn, pandas and
matplotlib in the interpreter given (default: this one); this script installs
nothing and prints a `skipped` line when the checkout or those are missing.
rar_jax runs through bench/step_time.py (a fresh process per measurement).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def skipped(why):
  print(json.dumps({"bench": "paper_code_step_time", "skipped": why}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--rar_cl_dir",
    default=os.environ.get("RAR_CL_DIR", "../RAR-CL"),
    help="a checkout of github.com/lillykumari8/RAR-CL",
  )
  p.add_argument("--torch_python", default=sys.executable)
  p.add_argument("--model", default="resnet18_reduced")
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--steps", type=int, default=10, help="steps per timed pass")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--iter_fgsm", type=int, default=2)
  p.add_argument(
    "--input_size",
    type=int,
    default=0,
    help="square image side for both systems (0: 32 ResNet, 28 MLP; 84: mini-ImageNet)",
  )
  p.add_argument("--conv_impls", default="auto", help="rar_jax's, comma-separated")
  p.add_argument("--stream_loops", default="auto", help="rar_jax's, comma-separated")
  p.add_argument("--batch_norm_rows", default="group", help="rar_jax's, comma-separated")
  p.add_argument("--cpu_conv_libraries", default="auto", help="rar_jax's, comma-separated")
  p.add_argument(
    "--threads",
    type=int,
    default=0,
    help="threads for both systems (0 = each one's default); 1 also turns off "
    "XLA's multi-threaded Eigen",
  )
  a = p.parse_args()
  for name in ("model.py", "mir_dadv.py", "buffer.py"):
    if not os.path.exists(os.path.join(a.rar_cl_dir, name)):
      return skipped(f"no RAR-CL checkout at {a.rar_cl_dir} ({name} missing)")
  check = subprocess.run(
    [a.torch_python, "-c", "import torch, scipy, sklearn, pandas, matplotlib"],
    capture_output=True,
    text=True,
  )
  if check.returncode:
    return skipped(
      f"{a.torch_python} lacks the paper's dependencies: "
      f"{check.stderr.strip().splitlines()[-1] if check.stderr else '?'}"
    )
  env = dict(os.environ, MPLBACKEND="Agg")
  jax_env = dict(os.environ)
  if a.threads == 1:
    jax_env["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
      " intra_op_parallelism_threads=1"
    ).strip()
  # Alternate the two systems so slow drifts of a shared machine hit both.
  for method in a.methods.split(","):
    subprocess.run(
      [
        a.torch_python,
        os.path.join(HERE, "paper_code_worker.py"),
        f"--rar_cl_dir={a.rar_cl_dir}",
        f"--model={a.model}",
        f"--methods={method}",
        f"--steps={a.steps}",
        f"--repeats={a.repeats}",
        f"--iter_fgsm={a.iter_fgsm}",
        f"--threads={a.threads}",
        f"--input_size={a.input_size}",
      ],
      check=True,
      env=env,
    )
    subprocess.run(
      [
        sys.executable,
        os.path.join(HERE, "step_time.py"),
        f"--models={a.model}",
        f"--methods={method}",
        "--seeds=1",
        f"--steps={a.steps * 5}",
        f"--resnet_steps={a.steps}",
        f"--repeats={a.repeats}",
        f"--iter_fgsm={a.iter_fgsm}",
        "--batching=auto",
        f"--conv_impls={a.conv_impls}",
        f"--stream_loops={a.stream_loops}",
        f"--batch_norm_rows={a.batch_norm_rows}",
        f"--input_size={a.input_size}",
        f"--cpu_conv_libraries={a.cpu_conv_libraries}",
      ],
      check=True,
      env=jax_env,
    )


if __name__ == "__main__":
  main()
