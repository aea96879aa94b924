"""Where one compiled training step of the reduced ResNet-18 spends its time.

Runs the step as bench/step_time.py does (synthetic data, the execution
picked for this machine unless told), traces a few steps with JAX's profiler
and sums XLA's CPU operations by kind, read from the compiled program:

- ``convolution``: library calls that hold a convolution (YNNPACK's fusions);
- ``layout``: transposes and copies (XLA puts transposes in front of the
  kernel gradients' convolutions, with the batch norm that feeds them fused in);
- ``reduction``: fusions that reduce (batch norm's statistics and gradients);
- ``element-wise``: the other fusions (batch norm's scaling, ReLU, the
  update);
- ``other``: everything else XLA's runtime runs (the head's matmuls among it).

The times are the operations' own, summed over threads. Eigen's convolutions
return at once and run on Eigen's thread pool, so with ``eigen`` they appear
as the step's CPU time minus what was traced (``untraced``); YNNPACK's run
inside the trace, whose times then include a little waiting on its threads
(``untraced`` near zero, or below). Each line: ms
per step by kind, wall and CPU ms per step. About 1 minute at 84x84.

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
# Before JAX starts: the compiled programs' text, to tell what each operation is.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP}"

import jax  # noqa: E402
from _common import cli, cpu_model  # noqa: E402
from step_time import prepare  # noqa: E402

KINDS = ("convolution", "layout", "reduction", "element-wise", "other")
# Runtime bookkeeping around the operations, not operations.
WRAPPERS = re.compile(r"^(\$|ThunkExecutor|PjitFunction|PjRt|Execute|ParseArguments|Handle )")


def kinds_of_operations(dump_dir):
  """{operation name: kind} from the largest optimised program in ``dump_dir``
  (the step)."""
  files = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
  text = open(max(files, key=os.path.getsize)).read()
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
  return kinds


def traced_ms(trace_dir, kinds, steps):
  path = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))[0]
  events = json.load(gzip.open(path))["traceEvents"]
  out = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not WRAPPERS.match(e["name"]):
      out[kinds.get(e["name"], "other")] += e["dur"] / 1000 / steps
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
      kinds = kinds_of_operations(DUMP)
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(*args)[0])
      wall, cpu = time.perf_counter() - t0, time.process_time() - c0
      with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        jax.block_until_ready(compiled(*args)[0])
        jax.profiler.stop_trace()
        ms = traced_ms(trace_dir, kinds, a.steps)
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
