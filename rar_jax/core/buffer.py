"""A fixed-capacity replay buffer as pure functions on a state pytree.

`init` / `add` / `sample` follow flashbax's shape: the state is a
`flax.struct` dataclass, every function is jittable and vmappable, and
arguments are validated up front (at trace time) with clear messages.

Storage policies:

- ``reservoir``: Vitter's algorithm R; after ``n`` offers every item offered so
  far is held with probability ``capacity / n``.
- ``class_balanced``: while there is room every item is stored; once full, an
  item of a class that holds fewer slots than the largest class replaces a
  random slot of the largest class; an item of a largest class replaces a random
  slot of its own class with probability ``held / seen`` (reservoir within the
  class). Classes therefore stay balanced to within one slot.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from rar_jax.errors import ArgumentError

POLICIES = ("reservoir", "class_balanced")


class BufferState(struct.PyTreeNode):
  """Replay memory. Slots ``[0, size)`` hold items; the rest are empty."""

  x: jax.Array  # [capacity, *x_shape]
  y: jax.Array  # [capacity] int32 labels (0 in empty slots)
  size: jax.Array  # () int32, items held
  seen: jax.Array  # () int32, items offered so far
  class_seen: jax.Array  # [num_classes] int32, offers per class (class_balanced)
  policy: str = struct.field(pytree_node=False, default="reservoir")


def init(
  capacity: int, x_shape: Sequence[int], *, policy: str = "reservoir", num_classes: int = 1
) -> BufferState:
  """An empty buffer of ``capacity`` items of shape ``x_shape``."""
  if not isinstance(capacity, int) or capacity < 1:
    raise ArgumentError(f"buffer capacity (mem_size) must be a positive int, got {capacity!r}")
  if policy not in POLICIES:
    raise ArgumentError(f"storage_policy must be one of {POLICIES}, got {policy!r}")
  if policy == "class_balanced" and num_classes < 1:
    raise ArgumentError(f"class_balanced storage needs num_classes >= 1, got {num_classes!r}")
  x_shape = tuple(int(d) for d in x_shape)
  return BufferState(
    x=jnp.zeros((capacity, *x_shape), jnp.float32),
    y=jnp.zeros((capacity,), jnp.int32),
    size=jnp.zeros((), jnp.int32),
    seen=jnp.zeros((), jnp.int32),
    class_seen=jnp.zeros((max(num_classes, 1),), jnp.int32),
    policy=policy,
  )


def _check_batch(state: BufferState, x: jax.Array, y: jax.Array) -> None:
  if state.y.ndim != 1:
    raise ArgumentError(
      "buffer functions act on one buffer; use jax.vmap for a "
      f"stack of them (y has shape {state.y.shape})"
    )
  if x.shape[1:] != state.x.shape[1:]:
    raise ArgumentError(
      f"items of shape {x.shape[1:]} offered to a buffer of items of shape {state.x.shape[1:]}"
    )
  if y.shape != x.shape[:1]:
    raise ArgumentError(f"labels of shape {y.shape} do not match {x.shape[0]} items")


def _reservoir_slot(state: BufferState, y_item, key):
  """Slot for the next offered item under algorithm R, or capacity to skip."""
  del y_item
  cap = state.y.shape[0]
  j = jax.random.randint(key, (), 0, state.seen + 1)
  return jnp.where(state.seen < cap, state.seen, j)


def _class_balanced_slot(state: BufferState, y_item, key):
  cap = state.y.shape[0]
  num_classes = state.class_seen.shape[0]
  k_slot, k_keep = jax.random.split(key)
  held = jnp.arange(cap) < state.size
  counts = jnp.zeros((num_classes,), jnp.int32).at[state.y].add(held.astype(jnp.int32))
  largest = jnp.argmax(counts)
  own_is_largest = counts[y_item] >= counts[largest]
  victim_class = jnp.where(own_is_largest, y_item, largest)
  # A uniformly random held slot of victim_class (Gumbel-free: top-1 of uniforms).
  scores = jnp.where(held & (state.y == victim_class), jax.random.uniform(k_slot, (cap,)), -1.0)
  victim = jnp.argmax(scores)
  # Reservoir within a largest class: keep with probability held / seen.
  seen_y = state.class_seen[y_item] + 1
  keep = jnp.where(own_is_largest, jax.random.randint(k_keep, (), 0, seen_y) < counts[y_item], True)
  full_slot = jnp.where(keep, victim, cap)
  return jnp.where(state.size < cap, state.size, full_slot)


def _add_one(state: BufferState, item):
  x_item, y_item, key = item
  cap = state.y.shape[0]
  if state.policy == "reservoir":
    slot = _reservoir_slot(state, y_item, key)
  else:
    slot = _class_balanced_slot(state, y_item, key)
  write = slot < cap
  slot = jnp.minimum(slot, cap - 1)
  new_x = jnp.where(write, x_item, state.x[slot])
  new_y = jnp.where(write, y_item, state.y[slot])
  return state.replace(
    x=jax.lax.dynamic_update_index_in_dim(state.x, new_x, slot, 0),
    y=state.y.at[slot].set(new_y),
    size=jnp.minimum(state.size + 1, cap),
    seen=state.seen + 1,
    class_seen=(
      state.class_seen.at[y_item].add(1) if state.policy == "class_balanced" else state.class_seen
    ),
  ), None


def add(state: BufferState, x: jax.Array, y: jax.Array, key: jax.Array) -> BufferState:
  """Offers the items of ``(x, y)`` to the buffer one by one, in order."""
  _check_batch(state, x, y)
  keys = jax.random.split(key, x.shape[0])
  state, _ = jax.lax.scan(_add_one, state, (x.astype(state.x.dtype), y.astype(jnp.int32), keys))
  return state


def sample(state: BufferState, key: jax.Array, n: int, exclude_labels: Optional[jax.Array] = None):
  """Draws ``n`` distinct slots uniformly among the eligible ones.

  A slot is eligible when it holds an item whose label is not in
  ``exclude_labels`` (negative entries there are ignored, as padding).
  Returns ``(x, y, mask)`` of fixed shape; ``mask`` is False where fewer than
  ``n`` eligible slots exist, and those rows must be ignored.
  """
  cap = state.y.shape[-1]
  if state.y.ndim != 1:
    raise ArgumentError("buffer.sample acts on one buffer; use jax.vmap for a stack")
  if not isinstance(n, int) or not 1 <= n <= cap:
    raise ArgumentError(
      f"sample size (batch_size_mem) must be an int in [1, mem_size={cap}], got {n!r}"
    )
  eligible = jnp.arange(cap) < state.size
  if exclude_labels is not None:
    exclude_labels = jnp.asarray(exclude_labels).reshape(-1)
    hit = (state.y[:, None] == exclude_labels[None, :]) & (exclude_labels[None, :] >= 0)
    eligible &= ~jnp.any(hit, axis=1)
  # The top n of i.i.d. uniforms is a uniform n-subset; ineligible slots sink.
  scores = jnp.where(eligible, jax.random.uniform(key, (cap,)), -1.0)
  _, idx = jax.lax.top_k(scores, n)
  return state.x[idx], state.y[idx], eligible[idx]


__all__ = ["BufferState", "init", "add", "sample", "POLICIES"]
