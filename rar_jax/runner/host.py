"""Process-level settings of the host that rar_jax's programs run on."""

from __future__ import annotations

import ctypes
import os

_M_TOP_PAD = -2  # glibc's mallopt parameter (malloc.h)
TOP_PAD_BYTES = 512 * 2**20


def keep_freed_memory(top_pad_bytes: int = TOP_PAD_BYTES) -> bool:
  """Asks glibc's malloc to keep ``top_pad_bytes`` of freed heap mapped.

  XLA's CPU programs allocate their temporary buffers on every call; with
  glibc's default padding the heap top is handed back to the kernel after each
  call and the next call faults its pages in again. For the reduced ResNet-18
  that cost ~20% of a training step's gradient (docs/execution.md).
  Keeping 512 MiB mapped removes it. Returns whether it applied: not where the
  C library is not glibc, nor where the user set ``MALLOC_TOP_PAD_`` (theirs
  wins).
  """
  if "MALLOC_TOP_PAD_" in os.environ:
    return False
  try:
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return bool(mallopt(_M_TOP_PAD, int(top_pad_bytes)))
