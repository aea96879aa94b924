"""The workdir of a run: can it be written, can it be resumed with this
config, and which execution its checkpoints were written with."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from ml_collections import ConfigDict

from rar_jax.errors import ConfigError
from rar_jax.runner import hooks as hooks_lib
from rar_jax.runner import report
from rar_jax.runner.config import RUNTIME_KEYS, base_config
from rar_jax.runner.plan import RunPlan

_say = hooks_lib.say


def config_json(config: ConfigDict) -> dict:
  return json.loads(config.to_json())


def check_workdir(workdir: str) -> None:
  """Refuses a workdir the run could not write, before any data are loaded."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir!r} is a file, not a directory; pass another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # access() says yes to root on read-only mounts
      pass
  except OSError as e:
    raise ConfigError(
      f"--workdir {workdir!r} is not writable ({e.strerror or e}); pass another --workdir"
    ) from None


def check_resumable(workdir: str, config, overwrite: bool) -> None:
  """Refuses to mix two configs' runs in one workdir; ``overwrite`` discards
  whatever run is there."""
  if overwrite:
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
      logging.warning("overwrite: discarding the checkpoints in %s", workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    for name in ("placement.json", "metrics.jsonl"):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
    for name in os.listdir(workdir) if os.path.isdir(workdir) else []:
      if name.startswith("events.out.tfevents"):
        os.remove(os.path.join(workdir, name))
    return
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  # A key added after that run was written ran as its default (keys are added that way).
  old = {**config_json(base_config()), **old}
  new = config_json(config)
  differ = sorted(
    k for k in set(old) | set(new) if k not in RUNTIME_KEYS and old.get(k) != new.get(k)
  )
  if differ:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
    raise ConfigError(
      f"{workdir} holds a run with another config ({details}); use another "
      "--workdir, or --config.overwrite=true to discard it"
    )


# Execution choices that change a run's numbers (float rounding): a resume keeps them.
PINNED = ("conv_impl", "cpu_conv_library")
# What placement files written before a key existed mean by its absence.
_BEFORE = {"cpu_conv_library": "default"}


def check_placement(
  workdir: str, config: ConfigDict, plan: RunPlan, devices: int, lead: bool
) -> RunPlan:
  """Checkpoints hold the runs padded to the device count: resuming them
  needs the same padding, which a different device count may change. They
  also resume with the convolutions they were written with (`PINNED`: ``auto``
  depends on the method, platform, process count and image size): the plan,
  pinned to those choices where ``auto`` would pick others."""
  path = os.path.join(workdir, "placement.json")
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    with open(path) as f:
      old = json.load(f)
    if old["padded_runs"] != plan.padded:
      raise ConfigError(
        f"{workdir} holds checkpoints of {old['padded_runs']} runs padded for "
        f"{old['devices']} devices; this process sees {devices} devices ({plan.padded} padded "
        f"runs). Resume with {old['devices']} devices (e.g. "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={old['devices']} on the CPU), "
        "or start afresh with --config.overwrite=true"
      )
    pinned = {}
    for key in PINNED:
      was = old.get(key, _BEFORE.get(key))  # conv_impl: absent in the earliest files
      if was and was != plan.execution[key]:
        if config[key] != "auto":
          raise ConfigError(
            f"{workdir} holds checkpoints trained with {key}={was!r}; resuming them with "
            f"{key}={config[key]!r} would change the numbers. Pass "
            f"--config.{key}={was} (or auto), or start afresh with --config.overwrite=true"
          )
        pinned[key] = was
    if pinned:
      plan = plan.with_execution(config, devices, **pinned)
  if lead:
    report.atomic_write_json(
      path,
      {"padded_runs": plan.padded, "devices": devices}
      | {key: plan.execution[key] for key in PINNED},
    )
  return plan
