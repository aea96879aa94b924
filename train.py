"""Runs a class-incremental benchmark.

  python train.py --config configs/default.py --workdir runs/default
  python train.py --config configs/split_fashion_mnist.py --config.methods=er,er_rar

Every config key can be overridden with --config.KEY=VALUE; see README.md.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py",
                                          "Config file (a Python file with get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where results and checkpoints go (default: runs/<config name>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-host: host:port of process 0 (jax.distributed). Omit on a TPU pod or SLURM, "
    "where --distributed alone detects everything.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", os.path.join(os.path.expanduser("~"), ".cache", "rar_jax", "xla"),
    "JAX's persistent compilation cache: a rerun of a config skips XLA compilation "
    "('' turns it off).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize (implied by the flags above).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO
  import jax
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  if _DISTRIBUTED.value or _COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1:
    # CPU processes exchange results through gloo; GPUs/TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from rar_jax import data, experiment  # after flag parsing, so --help is fast

  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])
  try:
    experiment.train_and_evaluate(config, workdir)
  except (experiment.ConfigError, data.DataError, experiment.TrainingDiverged) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(f"results in {os.path.abspath(workdir)}")


def check_override_keys(argv) -> None:
  """ml_collections answers an unknown --config.KEY with a traceback; answer
  it with one line naming the key and the nearest known ones."""
  import difflib
  from rar_jax.config_base import base_config

  known = set(base_config().keys())
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0].split(".", 1)[0]
      if key not in known:
        close = difflib.get_close_matches(key, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"error: unknown config key {key!r}{hint} (keys: see README.md)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
  check_override_keys(sys.argv)
  app.run(main)
