"""The library behind XLA's CPU convolutions (config key ``cpu_conv_library``):
XLA's default (YNNPACK in jaxlib 0.10) or Eigen, chosen per compiled program
through its compiler options (docs/execution.md)."""

from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from rar_jax.errors import ArgumentError

CPU_CONV_LIBRARIES = ("default", "eigen")
# XLA:CPU's library fusions in jaxlib 0.10 are YNNPACK's dots, reductions and
# convolutions; "eigen" keeps the first two and leaves convolutions to Eigen.
_EIGEN_CONVOLUTIONS: Dict[str, Union[str, bool]] = {
  "xla_cpu_experimental_ynn_fusion_type": (
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
  )
}
# In a program without batch statistics (evaluation) XLA also fuses the last
# convolutions into YNNPACK's reductions (the pooling); there only dots stay.
_EIGEN_CONVOLUTIONS_FORWARD: Dict[str, Union[str, bool]] = {
  "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}
# Smallest image side at which "auto" picks Eigen's convolutions (bench/step_time.py
# --cpu_conv_libraries=default,eigen, docs/execution.md).
EIGEN_MIN_SIDE = 64


def compiler_options(
  cpu_conv_library: str = "default", forward_only: bool = False
) -> Optional[dict]:
  """XLA options that make the CPU's convolutions run on ``cpu_conv_library``
  (one of `CPU_CONV_LIBRARIES`): None for XLA's default, and wherever the
  option would not apply (another platform, a jaxlib without YNNPACK fusions).
  ``forward_only``: for a program that only applies the model (evaluation)."""
  if cpu_conv_library not in CPU_CONV_LIBRARIES:
    raise ArgumentError(
      f"cpu_conv_library={cpu_conv_library!r} is invalid: one of {CPU_CONV_LIBRARIES}"
    )
  if cpu_conv_library == "default" or not _knows_ynn_fusions():
    return None
  return dict(_EIGEN_CONVOLUTIONS_FORWARD if forward_only else _EIGEN_CONVOLUTIONS)


@functools.lru_cache(maxsize=1)
def _knows_ynn_fusions() -> bool:
  if jax.devices()[0].platform != "cpu":
    return False
  try:  # a jaxlib that lacks the option refuses it at compile time
    jax.jit(lambda a: a + 1).lower(jnp.zeros(1)).compile(compiler_options=_EIGEN_CONVOLUTIONS)
  except Exception:  # noqa: BLE001  (jaxlib's error types vary between versions)
    return False
  return True


def default_cpu_conv_library(
  platform: str, conv_model: bool, conv_impl: str, input_shape: Optional[Sequence[int]]
) -> str:
  """``eigen`` where XLA's convolutions run on the CPU on images of side
  `EIGEN_MIN_SIDE` or more, else ``default`` (measured: docs/execution.md).

  At 84x84 XLA's default library (YNNPACK in jaxlib 0.10) runs the kernel
  gradient of the wider convolutions up to 3.4x slower than Eigen on one core,
  and on one thread while the other waits; Eigen's step is 16-19% faster there.
  At 32x32 Eigen wins only through the second core (it is slower on one), so
  the default stays there, and with it every earlier number.
  """
  side = min(input_shape[:2]) if input_shape is not None and len(input_shape) == 3 else 0
  eigen = platform == "cpu" and conv_model and conv_impl == "xla" and side >= EIGEN_MIN_SIDE
  return "eigen" if eigen else "default"
