"""Runs a class-incremental benchmark.

  python train.py --config configs/default.py --workdir runs/default
  python train.py --config configs/split_fashion_mnist.py --config.methods=er,er_rar

Every config key can be overridden with --config.KEY=VALUE; see docs/config.md.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

# Next to this file, so the default works from any directory.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.py")


def config_path(argv) -> str:
  """The --config file as given, without ml_collections' ``:args`` suffix."""
  path = DEFAULT_CONFIG
  for i, arg in enumerate(argv[1:], 1):
    name, eq, value = arg.lstrip("-").partition("=")
    if arg.startswith("-") and name == "config":
      path = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
  return path if os.path.isfile(path) else path.split(":", 1)[0]


def check_config_file(argv) -> None:
  """ml_collections answers a missing config file with a traceback; answer it
  with one line."""
  path = config_path(argv)
  if not os.path.isfile(path):
    shipped = ", ".join(sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".py")))
    print(
      f"error: config file {path!r} not found (the shipped ones, in {CONFIG_DIR}: {shipped})",
      file=sys.stderr,
    )
    sys.exit(2)


def parse_flags(argv):
  """absl's flag parsing, except that asking for help is a success (absl exits 1)
  and a value of the wrong type (``--config.mem_size=abc``) is one ``error:`` line
  and exit status 2, like every other bad value."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = (str(e).splitlines() or [""])[0]
    print(f"error: {message} (see docs/config.md for each key's type)", file=sys.stderr)
    sys.exit(2)
  except SystemExit as e:
    asked = {"help", "helpshort", "helpfull", "?"}
    if e.code == 1 and any(a.lstrip("-").split("=")[0] in asked for a in argv[1:]):
      sys.exit(0)
    raise


def check_override_keys(argv) -> None:
  """ml_collections answers an unknown --config.KEY with a traceback; answer
  it with one line naming the key and the nearest known ones."""
  import difflib

  from rar_jax.runner.config import base_config

  known = set(base_config().keys())
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key = arg[len("--config.") :].split("=", 1)[0].split(".", 1)[0]
      if key == "method":  # the old key: one key now names a run's methods
        print(
          "error: config.method is now config.methods (comma-separated; one method: "
          "--config.methods=NAME)",
          file=sys.stderr,
        )
        sys.exit(2)
      if key not in known:
        close = difflib.get_close_matches(key, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(
          f"error: unknown config key {key!r}{hint} (keys: see docs/config.md)", file=sys.stderr
        )
        sys.exit(2)


if __name__ == "__main__":
  # Before the flags are defined: DEFINE_config_file loads the config and
  # applies the --config.KEY overrides as it is defined.
  sys.argv = ["--help" if a == "-h" else a for a in sys.argv]  # the usual spelling, too
  check_config_file(sys.argv)
  check_override_keys(sys.argv)

_CONFIG = config_flags.DEFINE_config_file(
  "config", DEFAULT_CONFIG, "Config file (a Python file with get_config())."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Where results and checkpoints go (default: runs/<config name>)."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-host: host:port of process 0 (jax.distributed). Omit on a TPU pod or SLURM, "
  "where --distributed alone detects everything.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id.")
_CACHE = flags.DEFINE_string(
  "compilation_cache",
  os.path.join(os.path.expanduser("~"), ".cache", "rar_jax", "xla"),
  "JAX's persistent compilation cache: a rerun of a config skips XLA compilation "
  "('' turns it off).",
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Call jax.distributed.initialize (implied by the flags above)."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO
  from rar_jax.runner import host

  host.keep_freed_memory()  # XLA's CPU programs re-fault their buffers otherwise
  import jax

  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  if _DISTRIBUTED.value or _COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1:
    # CPU processes exchange results through gloo; GPUs/TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from rar_jax.errors import RarError
  from rar_jax.runner import experiment  # after flag parsing, so --help is fast

  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
    "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
  )
  try:
    experiment.train_and_evaluate(config, workdir)
  except RarError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(f"results in {os.path.abspath(workdir)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
