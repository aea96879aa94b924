"""Where one compiled training step of the reduced ResNet-18 spends its time.

Runs the step as bench/step_time.py does (synthetic data, the execution
picked for this machine unless told), traces a few steps with JAX's profiler
and sums XLA's CPU operations by kind, read from the compiled program:

- ``convolution``: convolutions (Eigen's calls, YNNPACK's fusions that hold one);
- ``layout``: transposes and copies (XLA puts transposes in front of the
  kernel gradients' convolutions, with the batch norm that feeds them fused in);
- ``reduction``: fusions that reduce (batch norm's statistics and gradients);
- ``element-wise``: the other fusions (batch norm's scaling, ReLU, the
  update);
- ``other``: the step program's other operations (the head's matmuls among
  them).

The process runs on one pinned core and one thread, so that every operation,
Eigen's convolutions included, runs alone inside the trace: each line holds ms
per step by kind, the step's wall and CPU ms, and ``untraced``, the CPU time
outside the step's program (the host loop's Python, the small programs around
it). About 1 minute at 84x84.

  python bench/step_profile.py --input_size 84 --out bench/results/step_profile_epyc25.jsonl
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import tempfile
import time

DUMP = tempfile.mkdtemp(prefix="step_profile_")
# Before JAX starts: the compiled programs' text, to tell what each operation is;
# one core and one thread, so that every operation runs inside the trace, alone.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP} --xla_cpu_multi_thread_eigen=false"
)
from _common import cli, cpu_model, pin_one_core  # noqa: E402

pin_one_core()
import jax  # noqa: E402
from step_time import prepare  # noqa: E402

KINDS = ("convolution", "layout", "reduction", "element-wise", "other")
# Operations that only hold others (a loop's body is traced op by op).
CONTAINERS = ("while", "conditional", "call")


def kinds_of_operations(dump_dir):
  """``(module, {operation: kind})`` of the largest optimised program in
  ``dump_dir`` (the step's)."""
  files = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
  if not files:
    raise SystemExit(
      "step_profile: XLA compiled no program here (a compilation cache hit? "
      "unset JAX_COMPILATION_CACHE_DIR)"
    )
  path = max(files, key=os.path.getsize)
  module = os.path.basename(path).split(".")[1]  # module_0076.jit_one.cpu_after_...
  # A fusion of 6+ outputs writes /*index=5*/ in its type: not an assignment.
  text = re.sub(r"/\*index=\d+\*/", "", open(path).read())
  bodies = dict(re.findall(r"^%?([\w.-]+) [^\n]*\{\n(.*?)\n\}", text, re.S | re.M))
  kinds = {}
  for name, op, called in re.findall(
    r"^\s*(?:ROOT )?%([\w.-]+) = [^=]*? ([a-z-]+)\((?:.*calls=%([\w.-]+))?", text, re.M
  ):
    body = bodies.get(called, "") if called else ""
    if op == "convolution" or " convolution(" in body:
      kinds[name] = "convolution"
    elif op == "dot" or " dot(" in body:
      kinds[name] = "other"
    elif op in ("transpose", "copy") or name.startswith(("transpose", "copy")):
      kinds[name] = "layout"
    elif op == "fusion" and (" reduce(" in body or " reduce-window(" in body):
      kinds[name] = "reduction"
    elif op == "fusion":
      kinds[name] = "element-wise"
  return module, kinds


def traced_ms(trace_dir, module, kinds, steps):
  """ms per step of the step program's operations, by kind, from the trace."""
  path = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))[0]
  out = collections.Counter()
  for e in json.load(gzip.open(path))["traceEvents"]:
    args = e.get("args") or {}
    op = args.get("hlo_op", "")
    if e.get("ph") == "X" and args.get("hlo_module") == module and not op.startswith(CONTAINERS):
      out[kinds.get(op, "other")] += e["dur"] / 1000 / steps
  return {k: round(out[k], 1) for k in KINDS}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--input_size", type=int, default=84)
  p.add_argument("--steps", type=int, default=4, help="steps traced")
  p.add_argument("--iter_fgsm", type=int, default=2)
  p.add_argument(
    "--cpu_conv_libraries", default="auto", help="comma-separated: auto, default, eigen"
  )
  p.add_argument("--out", default="", help="append the JSON lines to this file")
  a = p.parse_args()
  for method in a.methods.split(","):
    for library in a.cpu_conv_libraries.split(","):
      shutil.rmtree(DUMP)  # this step's programs only
      compiled, args, execution = prepare(
        "resnet18_reduced",
        method,
        1,
        a.steps,
        a.iter_fgsm,
        "auto",
        input_size=a.input_size,
        cpu_conv_library=library,
      )
      module, kinds = kinds_of_operations(DUMP)
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(*args)[0])
      wall, cpu = time.perf_counter() - t0, time.process_time() - c0
      with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        jax.block_until_ready(compiled(*args)[0])
        jax.profiler.stop_trace()
        ms = traced_ms(trace_dir, module, kinds, a.steps)
      cpu_ms = 1000 * cpu / a.steps
      row = dict(
        bench="step_profile",
        model="resnet18_reduced",
        method=method,
        input_size=a.input_size,
        iter_fgsm=a.iter_fgsm,
        **{k: execution[k] for k in ("cpu_conv_library", "stream_loop", "unroll")},
        cpu=cpu_model(),
        ms_per_step=round(1000 * wall / a.steps, 1),
        cpu_ms_per_step=round(cpu_ms, 1),
        traced_ms=ms,
        untraced_ms=round(cpu_ms - sum(ms.values()), 1),
      )
      print(json.dumps(row), flush=True)
      if a.out:
        with open(a.out, "a") as f:
          f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  try:
    cli(main)
  finally:
    shutil.rmtree(DUMP, ignore_errors=True)
