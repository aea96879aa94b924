"""Grids over numeric hyper-parameters, run as one program.

A sweep spec is ``"beta_coef=0.1,0.3;epsilon_fgsm=0.1,0.3"``: the cartesian
product of the listed values. Every cell x seed becomes one *run*; all runs of a
method share one compiled program (`vmap`), spread over the devices by
`jax.sharding` along the ``runs`` axis.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Tuple

from rar_jax.errors import SweepError

# Numeric keys a sweep may vary: they live in the state (`Hyper`, the optimiser's
# injected learning rate and weight-average decay), so cells differ only in data, not in program.
SWEEPABLE = (
  "beta_coef",
  "epsilon_fgsm",
  "alpha_fgsm",
  "iter_fgsm",
  "decay_factor_fgsm",
  "opt_lr",
  "mixup_alpha",
  "learning_rate",
  "ema_decay",
)


def parse_sweep(spec: str) -> List[Dict[str, float]]:
  """The grid's cells as override dicts; ``""`` is one cell with no overrides."""
  if not spec or not spec.strip():
    return [{}]
  axes: List[Tuple[str, List[float]]] = []
  for part in spec.split(";"):
    if not part.strip():
      continue
    if "=" not in part:
      raise SweepError(f"sweep part {part!r} is not KEY=V1,V2,...")
    key, values = (s.strip() for s in part.split("=", 1))
    if key not in SWEEPABLE:
      raise SweepError(f"sweep key {key!r} cannot be swept; sweepable: {SWEEPABLE}")
    if key in (k for k, _ in axes):
      raise SweepError(f"sweep key {key!r} appears twice")
    try:
      parsed = [int(v) if key == "iter_fgsm" else float(v) for v in values.split(",") if v.strip()]
    except ValueError:
      raise SweepError(f"sweep values for {key} must be numbers, got {values!r}") from None
    if not parsed:
      raise SweepError(f"sweep key {key!r} has no values")
    axes.append((key, parsed))
  return [
    dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])
  ]


def cell_name(overrides: Dict[str, float]) -> str:
  return ",".join(f"{k}={v:g}" for k, v in overrides.items()) or "default"
