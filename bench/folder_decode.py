"""Decode time and peak memory of the image-folder source on a generated
mini-ImageNet-shaped folder (100 classes x 600 84x84 JPEGs in train/val/test
as 64/16/20 classes), cold (decoding every image) and cached, each load in a
fresh process, as JSON lines.

  python bench/folder_decode.py [--classes 100 --per_class 600 --keep DIR]

Peak memory is the loading process's maximum resident set size, with the
interpreter and NumPy/Pillow imported before loading reported beside it.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))


def _write_class(args):
  root, split, c, per_class, size = args
  import numpy as np
  from PIL import Image

  rng = np.random.default_rng(c)
  folder = os.path.join(root, split, f"n{c:08d}")
  os.makedirs(folder, exist_ok=True)
  for i in range(per_class):
    # Smooth random images: JPEG sizes near mini-ImageNet's (a few KB), not noise's.
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    image.save(os.path.join(folder, f"n{c:08d}_{i:05d}.jpg"), quality=90)


def generate(root, classes, per_class, size):
  splits = [("train", 0.64), ("val", 0.16), ("test", 0.20)]
  jobs, c = [], 0
  for split, share in splits:
    n = classes - c if split == "test" else round(share * classes)
    jobs += [(root, split, k, per_class, size) for k in range(c, c + n)]
    c += n
  with ProcessPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(_write_class, jobs))


def load_once(root):
  import numpy as np  # noqa: F401  (imported before the baseline)
  import PIL.Image  # noqa: F401

  from rar_jax import data

  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  t0 = time.perf_counter()
  ds = data.load("mini_imagenet", "folder", root)
  seconds = time.perf_counter() - t0
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  nbytes = ds.train_x.nbytes + ds.test_x.nbytes
  print(
    json.dumps(
      {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak / 1024),
        "rss_before_load_mb": round(base / 1024),
        "arrays_mb": round(nbytes / 2**20),
        "train": list(ds.train_x.shape),
        "test": list(ds.test_x.shape),
        "dtype": str(ds.train_x.dtype),
      }
    )
  )


def cpu_model():
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(l.split(":", 1)[1].strip() for l in out.splitlines() if "Model name" in l)
  except (OSError, StopIteration):
    return "?"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--classes", type=int, default=100)
  p.add_argument("--per_class", type=int, default=600)
  p.add_argument("--size", type=int, default=84)
  p.add_argument("--keep", default="", help="generate into (or reuse) this folder")
  p.add_argument("--one", default="", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:
    return load_once(a.one)
  work = tempfile.mkdtemp(prefix="rar_folder_bench_")
  root = a.keep or os.path.join(work, "mini")
  t0 = time.perf_counter()
  if not os.path.isdir(root):
    generate(root, a.classes, a.per_class, a.size)
  generated = time.perf_counter() - t0
  env = dict(os.environ, RAR_JAX_DATA_CACHE=os.path.join(work, "cache"))
  common = {
    "bench": "folder_decode",
    "images": a.classes * a.per_class,
    "size": a.size,
    "cpus": os.cpu_count(),
    "cpu": cpu_model(),
  }
  try:
    for phase in ("cold", "cached"):
      out = subprocess.run(
        [sys.executable, __file__, f"--one={root}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
      )
      row = dict(common, phase=phase, **json.loads(out.stdout.strip().splitlines()[-1]))
      if phase == "cold":
        row["generate_seconds"] = round(generated, 1)
        cache = os.path.join(work, "cache")
        row["cache_mb"] = round(
          sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)) / 2**20
        )
      print(json.dumps(row), flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
