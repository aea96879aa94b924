"""Training speed of conv nets given by import path, through train.py, as JSON lines.

  python bench/model_path_time.py                    # both parts, ~6 min
  python bench/model_path_time.py --only resnet      # ~3 min
  python bench/model_path_time.py --only crossover   # ~3 min

Each run has an `execution`: `picked` (what train.py picks), `conv` (run as a conv net whatever
its size: `rar_jax.runner.loop.CONV_MODEL_MIN_MACS` set to 0 for that run) or `dense` (run as
the MLP is, the whole stream in one scan, no unrolling, evaluation in one program: the
threshold set out of reach, as every model by import path ran before it existed).

`resnet`: the reduced ResNet-18 as the built-in `resnet18_reduced` and as the NNX
`rar_jax.nnx_models:ReducedResNet18` (the same layers) on online Split Fashion-MNIST (ER, 1 seed,
2 tasks x 500 samples): built in, picked; NNX by import path, picked and dense. Needs
Fashion-MNIST (`FASHION_MNIST_DIR` or Debian's dataset-fashion-mnist).

`crossover`: the small CNN of docs/own_model.md on the bundled 8x8 digits (its config there:
3 seeds, ER and ER-RAR) at several widths, each as conv and as dense, to place the threshold
(multiply-adds of convolution per row, recorded).

ms per step is training time over steps (compilation and evaluation excluded), from each
run's metrics.json; the runs go one after another in this process's machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NNX_RESNET = [
  "--config.model=rar_jax.nnx_models:ReducedResNet18",
  "--config.model_kwargs={'in_channels': 1}",
]
RESNET_ROWS = (
  ("built-in", ["--config.model=resnet18_reduced"], "picked"),
  ("import path", NNX_RESNET, "picked"),
  ("import path", NNX_RESNET, "dense"),
)
THRESHOLDS = {"conv": 0, "dense": 2**62}
# train.py in a fresh interpreter, with the threshold set first where the execution asks.
LAUNCH = (
  "import runpy, sys; from rar_jax.runner import loop; t = int(sys.argv.pop(2)); sys.argv.pop(0);"
  "loop.CONV_MODEL_MIN_MACS = t if t >= 0 else loop.CONV_MODEL_MIN_MACS;"
  "runpy.run_path(sys.argv[0], run_name='__main__')"
)
RESNET_FLAGS = [
  "--config",
  os.path.join(ROOT, "configs", "split_fashion_mnist_resnet.py"),
  "--config.methods=er",
  "--config.num_seeds=1",
  "--config.num_tasks=2",
  "--config.samples_per_task=500",
]
RECORDED = ("stream_loop", "unroll", "cpu_conv_library", "eval_loop")


def train(flags, execution, cwd=ROOT):
  """metrics.json of each method of one train.py run."""
  with tempfile.TemporaryDirectory() as d:
    threshold = str(THRESHOLDS.get(execution, -1))
    cmd = [sys.executable, "-c", LAUNCH, os.path.join(ROOT, "train.py"), threshold]
    cmd += ["--workdir", d, *flags, "--config.progress=false", "--config.plot=false"]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
      raise SystemExit(out.stderr[-3000:])
    found = {}
    for root, _, files in os.walk(d):
      if "metrics.json" in files:
        with open(os.path.join(root, "metrics.json")) as f:
          m = json.load(f)
        found[m["method"]] = m
    return found


def row(part, model, execution, m, **extra):
  return {
    "bench": "model_path_time",
    "part": part,
    "model": model,
    "execution": execution,
    "method": m["method"],
    **extra,
    "ms_per_step": round(1000 / m["steps_per_second"], 2),
    "final_avg_accuracy": round(m["final_avg_accuracy"]["mean"], 3),
    **{k: m[k] for k in RECORDED},
    "cpu": cpu_model(),
  }


def resnet():
  for name, flags, execution in RESNET_ROWS:
    for m in train([*RESNET_FLAGS, *flags], execution).values():
      yield row("resnet", name, execution, m, eval_seconds=round(m["eval_seconds"], 1))


def crossover(widths):
  import functools

  from rar_jax.runner import user_model

  with open(os.path.join(ROOT, "docs", "own_model.md")) as f:
    page = f.read()
  with tempfile.TemporaryDirectory() as folder:
    for name in ("small_cnn.py", "config.py"):  # the page's files, as its reader writes them
      start = page.index(f"```python\n# {name}\n") + len("```python\n")
      with open(os.path.join(folder, name), "w") as f:
        f.write(page[start : page.index("```", start)])
    sys.path.insert(0, folder)
    import small_cnn

    for width in widths:
      macs = user_model.conv_macs(functools.partial(small_cnn.SmallCNN, 10, width=width), (8, 8, 1))
      for execution in ("conv", "dense"):
        flags = ["--config", "config.py", f"--config.model_kwargs={{'width': {width}}}"]
        for m in train(flags, execution, cwd=folder).values():
          yield row("crossover", f"small_cnn width {width}", execution, m, conv_macs_per_row=macs)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=("resnet", "crossover"))
  p.add_argument("--widths", default="8,16,32,64,256")
  a = p.parse_args()
  parts = [a.only] if a.only else ["resnet", "crossover"]
  for part in parts:
    rows = resnet() if part == "resnet" else crossover([int(w) for w in a.widths.split(",")])
    for r in rows:
      print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
