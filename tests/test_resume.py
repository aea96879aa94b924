"""Checkpoint and resume: a SIGKILLed run resumes to the same numbers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from rar_jax.runner.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A subprocess pipe left open is a leak (and a ResourceWarning in the test log).
pytestmark = pytest.mark.filterwarnings(
  "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)
# digits: 5 tasks x 28 steps; a checkpoint every 2 steps makes the run slow
# enough to kill in the middle of a task.
ARGS = [
  "--config",
  "configs/default.py",
  "--config.methods=er_rar",
  "--config.num_seeds=2",
  "--config.log_every_steps=2",
  "--config.checkpoint_every_steps=2",
  "--config.plot=false",
  "--config.progress=false",
]


def start(workdir, *extra, devices=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.Popen(
    [sys.executable, os.path.join(ROOT, "train.py"), *ARGS, *extra, "--workdir", str(workdir)],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def finish(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return out, err


def metrics(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  finish(start(workdir))
  return workdir, metrics(workdir)


def same_numbers(a, b):
  assert a["acc_matrix"] == b["acc_matrix"]  # bit-identical
  assert a["final_avg_accuracy"] == b["final_avg_accuracy"]
  assert a["final_forgetting"] == b["final_forgetting"]


@pytest.mark.slow
def test_sigkill_mid_task_then_resume_gives_identical_metrics(reference, tmp_path):
  proc = start(tmp_path)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = checkpoint_steps(tmp_path)
    if steps and steps[-1] > 30 and steps[-1] % 28:  # inside task 2
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.communicate()  # reaps it and closes its pipes (wait() leaves them to the GC)
  killed_at = checkpoint_steps(tmp_path)[-1]
  assert killed_at < 140 and not os.path.exists(tmp_path / "metrics.json")
  saved = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / str(killed_at) / "default")
  _, err = finish(start(tmp_path))
  assert "resumed from the checkpoint at step" in err
  same_numbers(metrics(tmp_path), reference[1])
  # Task 1 was evaluated before the kill: its time is carried over, not lost, so the
  # total is every task's evaluation time, both sessions' (metrics.jsonl, full precision).
  with open(tmp_path / "metrics.jsonl") as f:
    per_task = {l["step"]: l["eval/seconds"] for l in map(json.loads, f) if "eval/seconds" in l}
  before_kill = sum(v for step, v in per_task.items() if step <= killed_at)
  assert len(per_task) == 5 and before_kill > 0
  assert float(saved["eval_seconds"]) == pytest.approx(before_kill, rel=1e-9)
  assert metrics(tmp_path)["eval_seconds"] == pytest.approx(sum(per_task.values()), rel=1e-9)


def test_checkpoint_of_an_older_payload_restores_through_its_own_structure(tmp_path):
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=2)
  legacy = {"acc": np.arange(3.0), "position": np.asarray(7, np.int64)}
  ckpt.save(7, legacy)  # as written before eval_seconds joined the payload
  newest = dict(legacy, eval_seconds=np.asarray(0.0))
  step, got = ckpt.restore_latest(newest, legacy)
  assert step == 7 and set(got) == set(legacy) and int(got["position"]) == 7
  assert not os.path.exists(tmp_path / "checkpoints_damaged")
  # Through the newest structure alone it does not fit, and is set aside as unreadable.
  assert ckpt.restore_latest(newest) is None
  assert os.listdir(tmp_path / "checkpoints_damaged") == ["7"]


def test_the_newest_of_several_checkpoints_is_restored(tmp_path):
  # A resume from an older one would end with the same numbers (the stream
  # replays deterministically), so only the step tells it apart.
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=3)
  for step in (2, 4, 6, 9):  # keep=3 drops the first
    ckpt.save(step, {"position": np.asarray(step, np.int64)})
  assert ckpt.steps() == [4, 6, 9]
  step, got = ckpt.restore_latest({"position": np.asarray(0, np.int64)})
  assert step == 9 and int(got["position"]) == 9


@pytest.mark.slow
def test_damaged_checkpoint_is_skipped_for_the_previous_one(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  os.remove(workdir / "metrics.json")
  latest = checkpoint_steps(workdir)[-1]
  for root, _, files in os.walk(workdir / "checkpoints" / str(latest)):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  _, err = finish(start(workdir))
  assert f"checkpoint {latest}" in err and "unreadable" in err
  same_numbers(metrics(workdir), reference[1])


@pytest.mark.slow  # runs train.py end to end
def test_workdir_with_another_config_is_refused(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  proc = start(workdir, "--config.mem_size=50")
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "Traceback" not in err
  assert "mem_size: 100 -> 50" in err and "overwrite" in err
  finish(start(workdir, "--config.mem_size=50", "--config.overwrite=true", "--config.num_seeds=1"))
  assert metrics(workdir)["num_seeds"] == 1


@pytest.mark.slow  # runs train.py end to end
def test_nan_loss_stops_with_a_message_and_keeps_a_good_checkpoint(tmp_path):
  proc = start(tmp_path, "--config.learning_rate=1e30")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "NaN/Inf" in err and "Traceback" not in err
  assert not os.path.exists(tmp_path / "metrics.json")


@pytest.mark.slow  # runs train.py end to end
def test_resume_with_another_device_count_is_refused(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)  # written with 1 device: 2 runs
  proc = start(workdir, devices=3)  # 2 runs padded to 3
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "Traceback" not in err
  assert "padded for 1 devices" in err and "3 devices" in err


def test_a_workdir_from_before_a_new_key_resumes_as_that_key_default(tmp_path):
  """A key added after a run was written ran as its default there: resuming
  with the default goes on, with another value is refused, naming the key."""
  from rar_jax.runner import experiment, workdir
  from rar_jax.runner.config import base_config

  old = json.loads(base_config().to_json())
  del old["eval_classifier"]  # written before the key existed
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir.check_resumable(str(tmp_path), base_config(), overwrite=False)
  new = base_config()
  new.eval_classifier = "ncm"
  with pytest.raises(experiment.ConfigError, match="eval_classifier: 'head' -> 'ncm'"):
    workdir.check_resumable(str(tmp_path), new, overwrite=False)


def test_a_read_only_checkpointer_raises_on_an_unreadable_checkpoint_and_moves_nothing(tmp_path):
  """Re-evaluating a finished run (`experiment.evaluate_checkpoint`) must leave
  its folder as it was: no `checkpoints_damaged/`, no save."""
  from rar_jax.errors import CheckpointError

  Checkpointer(tmp_path / "checkpoints", keep=2).save(7, {"acc": np.arange(3.0)})
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=1, read_only=True)
  step, got = ckpt.restore_latest({"acc": np.zeros(3)})
  assert step == 7 and np.array_equal(got["acc"], np.arange(3.0))
  with pytest.raises(CheckpointError, match="checkpoint 7 in .* is unreadable"):
    ckpt.restore_latest({"position": np.asarray(0, np.int64)})  # not its structure
  with pytest.raises(RuntimeError, match="read-only"):
    ckpt.save(8, {"acc": np.arange(3.0)})
  assert sorted(os.listdir(tmp_path)) == ["checkpoints"]
  assert os.listdir(tmp_path / "checkpoints") == ["7"]


@pytest.mark.slow
def test_a_run_resumed_mid_task_keeps_its_weight_average(tmp_path):
  """The moving average of the weights (``ema_decay``) lives in the optimiser's
  state, so a run resumed two steps before its end evaluates to what the
  uninterrupted run did; an average restarted from the restored weights would
  not (it spans ~10 updates at decay 0.9)."""
  from rar_jax.runner import experiment
  from rar_jax.runner.config import load_file

  config = load_file(os.path.join(ROOT, "configs", "default.py"))
  config.update(
    methods="er", num_seeds=2, mem_size=40, ema_decay=0.9, plot=False, progress=False,
    log_every_steps=2, checkpoint_every_steps=2,
  )  # fmt: skip
  workdir = str(tmp_path / "run")
  full = experiment.train_and_evaluate(config, workdir)["er"]
  last = checkpoint_steps(workdir)
  assert len(last) == 2 and last[1] == last[0] + 2
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(last[1])))
  os.remove(os.path.join(workdir, "metrics.json"))
  again = experiment.train_and_evaluate(config, workdir)["er"]
  assert again["acc_matrix"] == full["acc_matrix"]
