"""What the training loop does besides training, as hooks (in the spirit of
CLU's periodic actions): the NaN guard, progress, metric writing and
checkpoints. The loop calls every hook, in order, after each compiled chunk
(`ChunkEnd`) and after each task's evaluation (`TaskEnd`)."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Dict, Iterable, Sequence, Tuple

import numpy as np

from rar_jax.errors import TrainingDiverged
from rar_jax.runner import checkpoint as checkpoint_lib
from rar_jax.runner.report import format_rate
from rar_jax.runner.writer import MetricWriter

LOG_LINE_SECONDS = 30.0  # progress in a log: one plain line per this many seconds


@dataclasses.dataclass(frozen=True)
class ChunkEnd:
  position: int  # steps trained so far, over all tasks
  task: int  # from 0
  num_tasks: int
  task_position: int  # steps trained so far in this task
  steps_per_task: int
  chunk_steps: int
  scalars: Dict[str, float]  # chunk means over steps and runs (`perturbation_max`: max)
  finite: bool
  diverged_runs: Tuple[int, ...]  # runs whose loss first went NaN/Inf in this chunk
  steps_per_second: float  # this session's training speed, all runs together
  payload: Callable[[], Any]  # the checkpoint payload (states, accuracies, position)
  # Continual evaluation's points in this chunk: (stream step, seed-mean accuracy
  # on every task [num_tasks]); empty when it is off.
  points: Tuple[Tuple[int, np.ndarray], ...] = ()


@dataclasses.dataclass(frozen=True)
class TaskEnd:
  position: int
  task: int  # from 0
  num_tasks: int
  accuracy: np.ndarray  # [num_tasks] seed-mean accuracy on every task after this one
  payload: Callable[[], Any]
  eval_seconds: float = 0.0  # this evaluation's wall time, all runs

  @property
  def average(self) -> float:
    return float(self.accuracy[: self.task + 1].mean())


class Hook:
  """Does nothing; subclasses override what they need."""

  def on_chunk(self, event: ChunkEnd) -> None:
    pass

  def on_task(self, event: TaskEnd) -> None:
    pass

  def close(self) -> None:
    pass


def say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


class NanGuard(Hook):
  """Stops at the first chunk whose loss is NaN/Inf, naming where, the
  checkpoint that really exists and what to try. In a sweep, the runs of some
  cells may diverge while others train on: the guard names those cells once
  (the results mark them as `diverged_seeds`) and stops when every cell has a
  diverged run, since then no cell is clean enough to be the best."""

  def __init__(
    self,
    method: str,
    learning_rate: float,
    checkpointer,
    cells: Sequence = (),
    diverged: Iterable[int] = (),
    lead: bool = True,
  ):
    self.method, self.learning_rate, self.checkpointer = method, learning_rate, checkpointer
    self.cells = list(cells)  # each run's sweep cell name: a sweep's message names them
    self.diverged = set(diverged)  # runs known to have diverged (before a resume too)
    self.lead = lead  # the process that speaks

  def _where(self, sweep: bool) -> str:
    ckpt = self.checkpointer
    if not isinstance(ckpt, checkpoint_lib.Checkpointer):
      return "checkpointing is off (keep_checkpoints=0)"
    if ckpt.steps():
      # A sweep saves on while some cells diverge; a single run stops first.
      which = "the last checkpoint" if sweep else "the last good checkpoint"
      return (
        f"{which} (step {ckpt.steps()[-1]}) is kept in "
        f"{ckpt.directory}, but resuming it repeats the same steps"
      )
    return "no checkpoint was written before it"

  def on_chunk(self, e: ChunkEnd) -> None:
    if e.finite:
      return
    new = sorted(set(e.diverged_runs) - self.diverged)
    self.diverged |= set(new)
    start = e.task_position - e.chunk_steps
    when = f"task {e.task + 1}/{e.num_tasks}, steps {start + 1}-{e.task_position} of the task"
    sweep = len(set(self.cells)) > 1
    if sweep and {self.cells[r] for r in self.diverged} != set(self.cells):
      if new and self.lead:
        say(
          f"[{self.method}] loss became NaN/Inf in {when} for sweep cells "
          f"{self._names(new)}: the other cells train on; metrics.json lists the "
          "diverged seeds per cell (diverged_seeds) and never picks such a cell as best"
        )
      return
    rate = f"learning_rate={self.learning_rate}"
    if sweep:
      rate = f"every sweep cell has a diverged run, last {self._names(new or e.diverged_runs)}"
    raise TrainingDiverged(
      f"{self.method}: loss became NaN/Inf in {when} ({rate}); {self._where(sweep)}. Try a "
      "smaller learning_rate, with --config.overwrite=true or another --workdir"
    )

  def _names(self, runs) -> str:
    return ", ".join(sorted({self.cells[r] for r in runs}, key=self.cells.index))


class Progress(Hook):
  """Training progress on stderr: a tqdm bar on a terminal; plain lines every
  `LOG_LINE_SECONDS` elsewhere (a bar's carriage-return redraws make a log
  file unreadable); one line per task with its accuracies."""

  def __init__(self, method: str, total: int, initial: int, enabled: bool, task_lines: bool = True):
    self.method, self.total, self.position, self.enabled = method, total, initial, enabled
    self.task_lines = task_lines  # the per-task line, even with the bar off
    self._last_line = time.monotonic()
    self._bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self._bar = tqdm(
        total=total,
        initial=initial,
        desc=method,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
        "[{elapsed}<{remaining}{postfix}]",
      )

  def on_chunk(self, e: ChunkEnd) -> None:
    self.position = e.position
    status = (
      f"task {e.task + 1}/{e.num_tasks}, loss {e.scalars['loss_current']:.3f}, "
      f"replay {e.scalars['loss_replay']:.3f}, {format_rate(e.steps_per_second)} steps/s"
    )
    if self._bar is not None:
      self._bar.update(e.chunk_steps)
      self._bar.set_postfix_str(status)
    elif self.enabled and time.monotonic() - self._last_line >= LOG_LINE_SECONDS:
      self._last_line = time.monotonic()
      say(
        f"[{self.method}] step {e.position}/{self.total} "
        f"({100 * e.position // self.total}%), {status}"
      )

  def on_task(self, e: TaskEnd) -> None:
    if not self.task_lines:
      return
    row = " ".join(f"{a:.3f}" if j <= e.task else "  -  " for j, a in enumerate(e.accuracy))
    line = (
      f"[{self.method}] after task {e.task + 1}/{e.num_tasks}: accuracy per task "
      f"[{row}], average {e.average:.3f} (evaluated in {e.eval_seconds:.1f} s)"
    )
    if self._bar is not None:
      self._bar.write(line, file=sys.stderr)  # above the bar
    else:
      say(line)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class MetricWriting(Hook):
  """Per chunk the step metrics (``train/...``) and, with continual evaluation,
  each evaluation point's accuracy on every task and the average over the
  tasks seen (``continual/...``); per task the accuracy on every task seen and
  their average (``eval/...``)."""

  def __init__(self, writer: MetricWriter):
    self.writer = writer

  def on_chunk(self, e: ChunkEnd) -> None:
    for step, accuracy in e.points:  # continual evaluation: every task, seen or not
      seen = accuracy[: (step - 1) // e.steps_per_task + 1]
      scalars = {f"continual/accuracy_task_{j + 1}": a for j, a in enumerate(accuracy)}
      scalars["continual/average_accuracy_seen"] = float(seen.mean())
      self.writer.write_scalars(step, scalars)
    self.writer.write_scalars(e.position, {f"train/{k}": v for k, v in e.scalars.items()})

  def on_task(self, e: TaskEnd) -> None:
    scalars = {f"eval/accuracy_task_{j + 1}": a for j, a in enumerate(e.accuracy[: e.task + 1])}
    scalars["eval/average_accuracy"] = e.average
    scalars["eval/seconds"] = e.eval_seconds
    self.writer.write_scalars(e.position, scalars)

  def close(self) -> None:
    self.writer.close()


class Checkpointing(Hook):
  """A checkpoint after every task and, with ``every_steps``, every that many
  steps into a task: at the first chunk end at or after each multiple (chunks
  follow continual evaluation's segments, which need not divide it)."""

  def __init__(self, checkpointer, every_steps: int):
    self.checkpointer, self.every_steps = checkpointer, every_steps

  def on_chunk(self, e: ChunkEnd) -> None:
    n, end = self.every_steps, e.task_position
    if n and end < e.steps_per_task and end // n > (end - e.chunk_steps) // n:
      self.checkpointer.save(e.position, e.payload())

  def on_task(self, e: TaskEnd) -> None:
    self.checkpointer.save(e.position, e.payload())

  def close(self) -> None:
    self.checkpointer.close()


def call(hooks: Sequence[Hook], event) -> None:
  for h in hooks:
    (h.on_chunk if isinstance(event, ChunkEnd) else h.on_task)(event)


def close_all(hooks: Sequence[Hook]) -> None:
  for h in hooks:
    h.close()


__all__ = [
  "ChunkEnd",
  "TaskEnd",
  "Hook",
  "NanGuard",
  "Progress",
  "MetricWriting",
  "Checkpointing",
  "call",
  "close_all",
  "say",
]
