"""The nearest-class-mean classifier on runs already trained, from their final
checkpoints (`rar_jax.runner.experiment.evaluate_checkpoint`), as JSON lines.

  python bench/ncm_checkpoints.py bench/results/quality/resnet_test_s10_bn_joint_eps0.3_m50/er ...
  python bench/ncm_checkpoints.py --resnet   # every ResNet test folder docs/results.md reports

For each method folder: the final average accuracy per seed with
``eval_classifier=ncm`` (the buffer's nearest class mean in the penultimate
features), beside the run's own (output-layer) numbers from its metrics.json.
``--check_head`` also re-evaluates with the output layer and checks that it
gives metrics.json's last row (the restore is the run's). One line per folder
goes to stdout and to bench/results/ncm_checkpoints.jsonl. Only the final
accuracy: a checkpoint holds the end of the run, not the buffer after each
task, so NCM's forgetting needs a run trained with ``eval_classifier=ncm``.
"""

import argparse
import json
import os

import numpy as np
from _common import cli, quiet

from rar_jax.runner import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "results")
QUALITY = os.path.join(OUT, "quality")
# The ResNet test folders of docs/results.md's ResNet tables with joint batch norm
# (the setting the ResNet rows of docs/results.md use), by memory.
RESNET = [
  "resnet_test_s10_bn_joint_eps0.3_m50/er",
  "resnet_test_s10_bn_joint_eps0.3_m50/er_rar",
  "resnet_test_s10_bn_joint_eps0.3_m50_seeds10-19/er",
  "resnet_test_s10_bn_joint_eps0.3_m50_seeds10-19/er_rar",
  "resnet_test_s10_bn_joint_eps0.3_m100/er",
  "resnet_test_s10_bn_joint_eps0.3_m100/er_rar",
  "resnet_test_s10_bn_joint/er",
  "resnet_test_s10_bn_joint_eps0.3/er_rar",
]


def one_folder(folder, check_head):
  with open(os.path.join(folder, "metrics.json")) as f:
    metrics = json.load(f)
  head = np.asarray(metrics["acc_matrix"])[:, -1]  # the finished run's last row
  ncm = quiet(experiment.evaluate_checkpoint)(folder, "ncm")
  if ncm["step"] != ncm["steps"]:
    raise SystemExit(f"{folder}: its latest checkpoint is at step {ncm['step']} of {ncm['steps']}")
  if len(ncm["overrides"]) > 1:
    raise SystemExit(f"{folder} is a sweep; give one-cell runs")
  line = {
    "bench": "ncm_checkpoints",
    "folder": os.path.relpath(folder, QUALITY),
    "method": metrics["method"],
    "mem_size": _config(folder)["mem_size"],
    "seeds": ncm["seeds"],
    "head_final_avg_accuracy": head.mean(-1).tolist(),
    "ncm_final_avg_accuracy": np.asarray(ncm["accuracy"]).mean(-1).tolist(),
  }
  if check_head:
    again = quiet(experiment.evaluate_checkpoint)(folder, "head")
    line["head_reproduced"] = bool(np.array_equal(np.asarray(again["accuracy"]), head))
  print(json.dumps(line), flush=True)
  with open(os.path.join(OUT, "ncm_checkpoints.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")


def _config(folder):
  with open(os.path.join(folder, "config.json")) as f:
    return json.load(f)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("folders", nargs="*", help="method folders (config.json, checkpoints/)")
  p.add_argument("--resnet", action="store_true", help="the ResNet folders listed in RESNET")
  p.add_argument("--check_head", action="store_true", help="re-evaluate the output layer too")
  a = p.parse_args()
  folders = list(a.folders) + ([os.path.join(QUALITY, f) for f in RESNET] if a.resnet else [])
  if not folders:
    p.error("give method folders, or --resnet")
  for folder in folders:
    one_folder(folder, a.check_head)


if __name__ == "__main__":
  cli(main)
