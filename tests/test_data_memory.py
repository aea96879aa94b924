"""The images a run trains on are in memory once: `to_unit_float`'s arrays are
64-byte aligned, so XLA's CPU client uses them in place (docs/data.md, memory),
with the same float32 values as ``x / 255``."""

import jax
import numpy as np
import pytest

from rar_jax.data import to_unit_float
from rar_jax.runner import loop

CPU = jax.devices()[0].platform == "cpu"


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.float32])
def test_to_unit_float_is_aligned_and_exact(dtype):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (5, 7, 7, 3)).astype(dtype)
  x = x[1:]  # a view starting mid-buffer: not aligned by luck
  out = to_unit_float(x)
  expected = x.astype(np.float32) / 255.0 if dtype == np.uint8 else x.astype(np.float32)
  assert out.dtype == np.float32 and out.ctypes.data % 64 == 0
  assert out.tobytes() == expected.tobytes()  # bit for bit
  every_byte = np.arange(256, dtype=np.uint8)
  assert to_unit_float(every_byte).tobytes() == (every_byte.astype(np.float32) / 255.0).tobytes()


@pytest.mark.skipif(not CPU, reason="XLA:CPU's in-place host buffers")
def test_placed_images_share_the_host_memory():
  x = to_unit_float(np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8))
  placed = loop.put_global(x, loop.replicated(loop.runs_mesh()))
  (shard,) = placed.addressable_shards
  # In place: the device buffer is the host array (a copy would double a dataset's memory).
  assert shard.data.unsafe_buffer_pointer() == x.ctypes.data
  np.testing.assert_array_equal(np.asarray(placed), x)
