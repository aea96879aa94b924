"""Orbax checkpoints of a whole run: states, accuracy matrix, stream position."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Optional, Tuple

import orbax.checkpoint as ocp

from rar_jax.errors import ArgumentError, CheckpointError


class Checkpointer:
  """Keeps the last ``keep`` checkpoints under ``directory``.

  Orbax writes each checkpoint into a temporary folder and renames it when
  complete, so a run killed mid-save leaves no half checkpoint that looks
  finished. A finished one that fails to restore (damaged files) is reported
  and skipped for the previous one. ``read_only`` (re-evaluating a finished
  run) writes, moves and deletes nothing: a damaged checkpoint raises instead.
  """

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        enable_async_checkpointing=False,
      ),
    )

  def save(self, step: int, payload: Any) -> None:
    if self.read_only:
      raise CheckpointError(f"{self.directory} was opened read-only")
    self._manager.save(step, args=ocp.args.StandardSave(payload), force=True)
    self._manager.wait_until_finished()

  def steps(self):
    return sorted(self._manager.all_steps())

  def restore_latest(self, *targets: Any) -> Optional[Tuple[int, Any]]:
    """``(step, payload)`` of the newest readable checkpoint, or None.

    ``targets`` are the payload structures to try, newest first: a checkpoint
    written by an older release (fewer fields) restores through its own
    structure instead of being taken for damaged files.
    """
    if not targets:
      raise ArgumentError("restore_latest needs at least one target structure")
    for step in reversed(self.steps()):
      try:
        return step, self._restore_any(step, targets)
      except Exception as e:  # damaged files surface as many error types
        if self.read_only:
          raise CheckpointError(
            f"checkpoint {step} in {self.directory} is unreadable "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
          ) from e
        aside = self._set_aside(step)
        logging.warning(
          "checkpoint %d in %s is unreadable (%s: %s); moved to %s, trying the previous one",
          step,
          self.directory,
          type(e).__name__,
          (str(e).splitlines() or [""])[0][:200],
          aside,
        )
    return None

  def _restore_any(self, step: int, targets: Tuple[Any, ...]) -> Any:
    """The checkpoint through the first target whose structure fits; the first
    (newest) target's error when none does."""
    errors = []
    for target in targets:
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # a structure mismatch or damaged files
        errors.append(e)
    raise errors[0]

  def _set_aside(self, step: int) -> str:
    """Moves a damaged checkpoint out of the way (kept for inspection), so the
    run can write that step again."""
    aside = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged", str(step))
    if os.path.exists(aside):
      shutil.rmtree(aside)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self._manager.reload()
    return aside

  def close(self):
    self._manager.close()


class NoCheckpoints:
  """Stands in for `Checkpointer` when ``keep_checkpoints=0`` (benchmarks)."""

  directory = "(checkpointing off: keep_checkpoints=0)"

  def save(self, step: int, payload: Any) -> None:
    pass

  def restore_latest(self, *targets: Any) -> None:
    return None

  def close(self):
    pass
