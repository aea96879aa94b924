"""How a task's steps are cut into compiled chunks, and where continual
evaluation's points fall in them.

Without continual evaluation a chunk is ``log_every_steps`` steps (the last
one of a task shorter). With it (``eval_every`` = E > 0) a task's steps are
segments of E steps (the last one shorter when E does not divide the task),
each followed by an evaluation; a chunk is a whole number of full segments
(as many as fit ``log_every_steps``, at least one) or the task's short last
segment alone. So every chunk program is a scan over segments around a scan
over their steps (`rar_jax.runner.loop.make_stream_runner`), and at most three
chunk shapes compile.
"""

from __future__ import annotations

import dataclasses
from typing import List

from rar_jax.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Chunk:
  start: int  # the task position (steps trained in the task) where the chunk starts
  steps: int
  segment: int  # steps per evaluation segment (0: no continual evaluation)

  @property
  def shape(self) -> tuple:
    """The index's step axes: ``(steps,)``, or ``(segments, segment)``."""
    return (self.steps,) if not self.segment else (self.steps // self.segment, self.segment)

  def points(self, task_start: int) -> List[int]:
    """The stream steps (from 1) evaluated at the end of each segment."""
    if not self.segment:
      return []
    end = task_start + self.start
    return [end + k * self.segment for k in range(1, self.steps // self.segment + 1)]


def task_chunks(steps_per_task: int, log_every_steps: int, eval_every: int = 0) -> List[Chunk]:
  """The chunks of one task, in order (every task is cut alike)."""
  chunk = min(log_every_steps, steps_per_task)
  if not eval_every:
    return [Chunk(s, min(chunk, steps_per_task - s), 0) for s in range(0, steps_per_task, chunk)]
  segment = min(eval_every, steps_per_task)
  full = steps_per_task // segment
  per_chunk = max(1, chunk // segment)
  out = [
    Chunk(k * segment, min(per_chunk, full - k) * segment, segment)
    for k in range(0, full, per_chunk)
  ]
  if steps_per_task % segment:
    tail = steps_per_task % segment
    out.append(Chunk(full * segment, tail, tail))
  return out


def remaining(chunks: List[Chunk], position: int) -> List[Chunk]:
  """The chunks of a task from ``position`` on. A position inside a chunk (a run
  resumed with another ``log_every_steps``) starts with that chunk's rest;
  with continual evaluation it must fall between segments."""
  out = [c for c in chunks if c.start >= position]
  inside = [c for c in chunks if c.start < position < c.start + c.steps]
  if inside:
    c = inside[0]
    rest = c.start + c.steps - position
    if c.segment and (position - c.start) % c.segment:
      raise CheckpointError(
        f"the checkpoint at task position {position} falls inside an evaluation segment "
        f"of {c.segment} steps; resume with the eval_every it was written with"
      )
    out.insert(0, Chunk(position, rest, c.segment))
  return out


def shapes(chunks: List[Chunk]) -> List[tuple]:
  """The distinct index step shapes the chunk programs compile for."""
  return sorted({c.shape for c in chunks})
