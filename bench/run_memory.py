"""Peak resident memory of a training run of Split mini-ImageNet's shape
(100 classes, 84x84x3, 48,000 training and 12,000 test images from the folder
cache), 10 seeds in one process, as one JSON line: data loaded, states built,
programs compiled and --train_seconds of training (--until training), or up to
the end of the first task's evaluation of every task (--until evaluation).
Later tasks repeat the same allocations.

  python bench/run_memory.py                  # generates the image folder once
  python bench/run_memory.py --data_dir DIR   # a mini-ImageNet folder of your own

About 3 minutes on 2 cores with --until training (plus a minute to write the
folder the first time, under --keep, default /tmp/rar_jax_mini_imagenet_like);
--until evaluation adds the rest of the first task (240 steps x 10 seeds, about
20 minutes) and its evaluation of 10 seeds on 12,000 images (about 15 minutes);
with --num_tasks 100 (one class a task, every image still loaded and trained on)
the first task is 48 steps. Peak memory is VmHWM of the training process, read
every half second. (--samples_per_task keeps only the images the tasks use, so
it measures a smaller run.)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from _common import cli, cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def vm_hwm_mb(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.0


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", default="", help="a mini-ImageNet folder (default: generate one)")
  p.add_argument("--keep", default="/tmp/rar_jax_mini_imagenet_like")
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--method", default="er")
  p.add_argument("--samples_per_task", type=int, default=0, help="0: every training image")
  p.add_argument("--until", choices=("training", "evaluation"), default="training")
  p.add_argument(
    "--num_tasks",
    type=int,
    default=0,
    help="0: the config's 20; 100 (one class a task) reaches the first evaluation with "
    "every image after 48 steps",
  )
  p.add_argument("--train_seconds", type=float, default=60.0)
  p.add_argument("--timeout", type=int, default=3600)
  a = p.parse_args()
  data_dir = a.data_dir or a.keep
  if not a.data_dir and not os.path.isdir(os.path.join(data_dir, "train")):
    subprocess.run(
      [sys.executable, os.path.join(HERE, "folder_decode.py"), "--keep", data_dir],
      check=True,
      stdout=subprocess.DEVNULL,
    )
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [
      sys.executable,
      os.path.join(ROOT, "train.py"),
      "--config",
      os.path.join(ROOT, "configs", "split_mini_imagenet.py"),
      f"--config.data_dir={data_dir}",
      f"--config.methods={a.method}",
      f"--config.num_seeds={a.seeds}",
      f"--config.samples_per_task={a.samples_per_task}",
      *([f"--config.num_tasks={a.num_tasks}"] if a.num_tasks else []),
      "--config.progress=false",
      "--config.plot=false",
      f"--workdir={workdir}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    peak, reached = [0.0], []

    def watch():
      while proc.poll() is None:
        peak[0] = max(peak[0], vm_hwm_mb(proc.pid))
        time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.time() + a.timeout
    for line in proc.stderr:
      sys.stderr.write(line)
      if a.until == "training" and "compiled in" in line:
        time.sleep(a.train_seconds)
        reached.append(f"compiled, then {a.train_seconds:g} s of training")
        break
      if re.search(r"task 1/\d+.*evaluated in", line):
        reached.append("task 1 trained and evaluated")
        break
      if time.time() > deadline:
        break
    peak[0] = max(peak[0], vm_hwm_mb(proc.pid))
    proc.terminate()
    proc.wait()
  print(
    json.dumps(
      {
        "bench": "run_memory",
        "config": "configs/split_mini_imagenet.py",
        "method": a.method,
        "seeds": a.seeds,
        "samples_per_task": a.samples_per_task,
        "num_tasks": a.num_tasks or 20,
        "until": a.until,
        "reached": reached[0] if reached else "stopped before task 1's evaluation",
        "peak_rss_mb": round(peak[0]),
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu": cpu_model(),
      }
    ),
    flush=True,
  )


if __name__ == "__main__":
  cli(main)
