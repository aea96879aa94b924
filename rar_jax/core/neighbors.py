"""Nearest-neighbour search in a feature space (exact, Euclidean)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rar_jax.errors import ArgumentError


def neighbor_distances(
  query: jax.Array,
  reference: jax.Array,
  query_labels: Optional[jax.Array] = None,
  reference_labels: Optional[jax.Array] = None,
) -> jax.Array:
  """Squared Euclidean distances ``[n_query, n_reference]`` over flattened rows.

  With both label arrays, pairs with the same label are at ``inf``.
  """
  if (query_labels is None) != (reference_labels is None):
    raise ArgumentError("give both query_labels and reference_labels, or neither")
  if query.shape[0] == 0 or reference.shape[0] == 0:
    raise ArgumentError(
      f"nearest_neighbors needs non-empty inputs, got {query.shape[0]} "
      f"queries and {reference.shape[0]} references"
    )
  q = query.reshape(query.shape[0], -1)
  r = reference.reshape(reference.shape[0], -1)
  if q.shape[1] != r.shape[1]:
    raise ArgumentError(f"query rows have {q.shape[1]} features, reference rows {r.shape[1]}")
  # The direct difference (not |q|^2 - 2qr + |r|^2) keeps ties and near-ties
  # exact; at replay sizes (10 x 10 rows) it is as cheap as a matmul.
  d = jnp.sum(jnp.square(q[:, None, :] - r[None, :, :]), axis=-1)
  if query_labels is not None:
    differ = jnp.asarray(query_labels)[:, None] != jnp.asarray(reference_labels)[None, :]
    d = jnp.where(differ, d, jnp.inf)
  return d


def nearest_neighbors(
  query: jax.Array,
  reference: jax.Array,
  query_labels: Optional[jax.Array] = None,
  reference_labels: Optional[jax.Array] = None,
) -> jax.Array:
  """For each query row, the index of the nearest reference row.

  Distances are Euclidean over flattened rows; ties go to the lowest index.
  When both label arrays are given only references with a label different
  from the query's count; a query with no such reference gets index 0 (use
  `neighbor_distances` to tell, its row is all ``inf``).
  """
  return jnp.argmin(neighbor_distances(query, reference, query_labels, reference_labels), axis=1)
