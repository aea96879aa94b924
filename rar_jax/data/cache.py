"""The cache of decoded image folders: one ``.npz`` per folder, image size and train fraction
under ``$RAR_JAX_DATA_CACHE`` (default ``$XDG_CACHE_HOME/rar_jax/data``, else
``~/.cache/rar_jax/data``; ``off`` turns it off), never in the data folder.

An entry holds the images (in train-then-test order) and a digest of the
listing (every path, size and modification time), the protocol and ``key``
(image size and train fraction): a changed, added or removed file makes
the entry stale, and the next load decodes again and replaces it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
  from rar_jax.data.folder import Listing

ENV = "RAR_JAX_DATA_CACHE"
VERSION = "1"  # bump when decoding changes


def cache_dir() -> Optional[str]:
  where = os.environ.get(ENV)
  if where is not None:
    return None if where.strip().lower() in ("", "off", "0", "none") else os.path.expanduser(where)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "rar_jax", "data")


def entry_path(listing: "Listing", key: str) -> Optional[str]:
  where = cache_dir()
  if where is None:
    return None
  name = hashlib.sha256(f"{listing.root}\0{listing.protocol}\0{key}".encode()).hexdigest()[:20]
  return os.path.join(where, f"{os.path.basename(listing.root) or 'root'}-{name}.npz")


def digest(listing: "Listing", key: str) -> str:
  h = hashlib.sha256(f"v{VERSION}\0{key}\0{listing.protocol}\0".encode())
  for path, (size, mtime) in zip(listing.paths, listing.stats):
    h.update(f"{path}\0{size}\0{mtime}\n".encode())
  return h.hexdigest()


def read(listing: "Listing", key: str) -> Optional[np.ndarray]:
  """The cached images of ``listing``, or None (no entry, or a stale one)."""
  path = entry_path(listing, key)
  if path is None or not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      if str(f["digest"]) != digest(listing, key):
        return None
      x = f["x"]
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):
    return None  # damaged: decode again and replace it
  return x if len(x) == len(listing.paths) else None


def write(listing: "Listing", key: str, x: np.ndarray) -> None:
  """Stores ``x`` for ``listing`` atomically; a cache that cannot be written
  is a warning, not an error."""
  path = entry_path(listing, key)
  if path is None:
    return
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, x=x, digest=np.array(digest(listing, key)))
      os.replace(tmp, path)
    except BaseException:
      os.remove(tmp)
      raise
  except OSError as e:
    logging.warning("could not cache the decoded images in %s (%s)", path, e)
