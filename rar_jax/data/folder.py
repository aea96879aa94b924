"""The image-folder source: ``DIR/<split>/<class>/<image>`` (PNG or JPEG).

Class folders and image files are read in sorted name order. Every image is
converted to RGB, resized so that its shorter side is ``image_size`` and
centre-cropped to ``image_size`` x ``image_size`` (torchvision's
``Resize(s)`` + ``CenterCrop(s)`` on PIL images, bilinear, as the paper's
code), and kept as uint8. Decoding runs on a thread pool (Pillow releases the
GIL); the result is cached (`rar_jax.data.cache`) so a second run reads one file.

Two protocols make train and test (``folder_split``):

* ``given``: ``DIR/train`` and ``DIR/test`` as they are; class ids are the
  sorted class folders of ``train``, and ``test`` may hold only those. A
  ``DIR/val`` folder is ignored (``validation_fraction`` holds out training
  images instead).
* ``per_class`` (the paper's mini-ImageNet protocol): the split folders
  present (``train``, ``val``, ``test``, in that order) are merged; class ids
  follow first appearance (sorted class folders within each split); each
  class's images, in that order, go ``int(train_fraction * n)`` to train and
  the rest to test.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

from rar_jax.data import cache as cache_lib
from rar_jax.errors import DataError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class Listing:
  """A folder's images in reading order: split-major, then class, then file."""

  root: str
  protocol: str
  classes: Tuple[str, ...]  # class folder names, in label order
  paths: Tuple[str, ...]  # relative to root: split/class/file
  labels: np.ndarray  # [N] int32
  split: np.ndarray  # [N] int32 index into SPLITS
  stats: Tuple[Tuple[int, int], ...]  # (size, mtime_ns) per path


def image_shape(image_size: int) -> Tuple[int, int, int]:
  return (image_size, image_size, 3)


def _subfolders(path: str) -> List[str]:
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images(path: str) -> List[os.DirEntry]:
  entries = [
    e
    for e in os.scandir(path)
    if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
  ]
  return sorted(entries, key=lambda e: e.name)


def _split_folders(root: str, protocol: str) -> List[str]:
  if not os.path.isdir(root):
    raise DataError(f"{root}: no such folder (expected {root}/<split>/<class>/<image>)")
  present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
  need = ("train", "test") if protocol == "given" else ()
  missing = [s for s in need if s not in present]
  if missing or not present:
    raise DataError(
      f"{root}: no {'/, '.join(missing or ['train'])}/ folder (expected "
      f"{root}/{{train,test}}/<class>/<image>"
      + (", or val/ too, merged by folder_split='per_class')" if protocol == "given" else ")")
    )
  return ["train", "test"] if protocol == "given" else present


def list_folder(root: str, protocol: str) -> Listing:
  """Every image of ``root`` under ``protocol`` ('given' or 'per_class'), with
  one-line DataErrors for a missing folder, an empty split or class folder,
  and test classes without training images."""
  root = os.path.abspath(root)
  classes: List[str] = []
  paths, labels, split, stats = [], [], [], []
  for s in _split_folders(root, protocol):
    names = _subfolders(os.path.join(root, s))
    if not names:
      raise DataError(f"{os.path.join(root, s)}: no class folders (expected {s}/<class>/<image>)")
    for name in names:
      if name not in classes:
        if protocol == "given" and s == "test":
          raise DataError(f"{os.path.join(root, s, name)}: class {name!r} has no train/ folder")
        classes.append(name)
      images = _images(os.path.join(root, s, name))
      if not images:
        raise DataError(
          f"{os.path.join(root, s, name)}: no images (PNG or JPEG: {', '.join(IMAGE_EXTENSIONS)})"
        )
      for e in images:
        st = e.stat()
        paths.append(f"{s}/{name}/{e.name}")
        stats.append((st.st_size, st.st_mtime_ns))
      labels += [classes.index(name)] * len(images)
      split += [SPLITS.index(s)] * len(images)
  return Listing(
    root,
    protocol,
    tuple(classes),
    tuple(paths),
    np.asarray(labels, np.int32),
    np.asarray(split, np.int32),
    tuple(stats),
  )


def resize_center_crop(image, size: int):
  """torchvision's ``Resize(size)`` then ``CenterCrop(size)`` on a PIL image."""
  from PIL import Image

  w, h = image.size
  short, long = (w, h) if w <= h else (h, w)
  new_long = int(size * long / short)
  new_w, new_h = (size, new_long) if w <= h else (new_long, size)
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def decode(path: str, size: int) -> np.ndarray:
  """One image as uint8 ``[size, size, 3]``; a DataError naming ``path`` when
  it is unreadable or truncated."""
  from PIL import Image

  try:
    with Image.open(path) as image:
      image.load()  # decodes now: a truncated file fails here
      return np.asarray(resize_center_crop(image.convert("RGB"), size), np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


class _Progress:
  """A tqdm bar on a terminal, plain start and end lines otherwise."""

  def __init__(self, total: int, what: str, enabled: bool):
    self.enabled, self.bar, self.start = enabled, None, time.perf_counter()
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr)
    elif enabled:
      print(f"{what}: {total} images ...", file=sys.stderr, flush=True)

  def update(self, n: int) -> None:
    if self.bar is not None:
      self.bar.update(n)

  def close(self, message: str) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.enabled:
      print(f"{message} in {time.perf_counter() - self.start:.1f} s", file=sys.stderr, flush=True)


def decode_all(
  listing: Listing, size: int, order: np.ndarray, progress: bool = False, workers: int = 0
) -> np.ndarray:
  """The images ``order`` (indices into ``listing``) as uint8 ``[len(order), size, size, 3]``."""
  x = np.empty((len(order), *image_shape(size)), np.uint8)
  chunk = 64
  starts = range(0, len(x), chunk)

  def work(start: int) -> int:
    for i in range(start, min(start + chunk, len(x))):
      x[i] = decode(os.path.join(listing.root, listing.paths[order[i]]), size)
    return min(chunk, len(x) - start)

  bar = _Progress(len(x), f"decoding {listing.root}", progress)
  pool = ThreadPoolExecutor(workers or min(32, os.cpu_count() or 1))
  try:
    for n in pool.map(work, starts):  # in order: the first bad image is the one reported
      bar.update(n)
  finally:
    pool.shutdown(wait=True, cancel_futures=True)  # a bad image stops the rest
  bar.close(f"decoded {len(x)} images at {size}x{size}")
  return x


def split_indices(listing: Listing, train_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
  """``(train, test)`` indices into the listing under its protocol."""
  if listing.protocol == "given":
    return np.flatnonzero(listing.split == 0), np.flatnonzero(listing.split == 2)
  train, test = [], []
  for c, name in enumerate(listing.classes):
    idx = np.flatnonzero(listing.labels == c)  # train/, val/, test/ files, each sorted
    cut = int(train_fraction * len(idx))
    if cut == 0 or cut == len(idx):
      raise DataError(
        f"{listing.root}: class {name!r} has {len(idx)} images; train_fraction="
        f"{train_fraction} leaves {'no training' if cut == 0 else 'no test'} image"
      )
    train.append(idx[:cut])
    test.append(idx[cut:])
  return np.concatenate(train), np.concatenate(test)


def load_folder(
  root: str, image_size: int, protocol: str, train_fraction: float = 0.8, progress: bool = False
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """``(train_x, train_y, test_x, test_y, num_classes)`` of an image folder,
  uint8, decoded once and then read from the cache."""
  if image_size < 1:
    raise DataError(f"{root}: an image folder needs image_size >= 1 (got {image_size})")
  listing = list_folder(root, protocol)
  train, test = split_indices(listing, train_fraction)  # its errors before any decoding
  # Decoded straight into train-then-test order: the two splits are views, no copies.
  order = np.concatenate([train, test])
  key = f"{image_size}/{train_fraction!r}"
  x: Optional[np.ndarray] = cache_lib.read(listing, key)
  if x is None:
    x = decode_all(listing, image_size, order, progress)
    cache_lib.write(listing, key, x)
  elif progress:
    print(f"{len(x)} decoded images from the cache", file=sys.stderr, flush=True)
  y, n = listing.labels, len(train)
  return x[:n], y[train], x[n:], y[test], len(listing.classes)
