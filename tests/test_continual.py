"""Continual evaluation: the metrics against hand-computed values and a brute
force, the compiled curve against evaluating saved parameters, and the runner
(training unchanged, resume, sweeps, files, bad input)."""

from __future__ import annotations

import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rar_jax
from rar_jax import data as data_lib
from rar_jax.errors import ArgumentError, ConfigError
from rar_jax.evaluation import continual
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import experiment, loop
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- the metrics

# Two tasks of 4 steps, evaluated every 2 steps: points 2, 4 (task 1 ends), 6, 8.
STEPS = np.array([2, 4, 6, 8])
ENDS = np.array([4, 8])
# One seed: task 1 learnt to 0.9, collapses to 0.3 at step 6 and recovers to 0.7;
# task 2 unseen (0) until it starts, then 0.5 and 0.8.
HAND = np.array([[[0.6, 0.0], [0.9, 0.0], [0.3, 0.5], [0.7, 0.8]]])


def test_the_metrics_of_a_hand_made_curve():
  # AAA: points 1-2 see task 1 only; points 3-4 see both.
  assert continual.average_anytime_accuracy(HAND, STEPS, ENDS) == pytest.approx(
    [(0.6 + 0.9 + 0.4 + 0.75) / 4]
  )
  # min-ACC: task 1 after step 4: min(0.3, 0.7).
  assert continual.min_accuracy(HAND, STEPS, ENDS) == pytest.approx([0.3])
  # WC-ACC: 1/2 * 0.8 (last task at the end) + 1/2 * 0.3.
  assert continual.worst_case_accuracy(HAND, STEPS, ENDS) == pytest.approx([0.55])
  # The gap: 0.9 at task 1's end, lowest 0.3 inside task 2, at step 6.
  gap = continual.stability_gap(HAND, STEPS, ENDS)
  assert gap.mean == pytest.approx([0.6]) and gap.per_switch[0] == pytest.approx([0.6])
  assert gap.step_of_min.tolist() == [[6]]


def brute_force(acc, steps, ends):
  """Each definition as written in the docs, with loops."""
  seeds, points, tasks = acc.shape
  starts = [0] + list(ends[:-1])
  out = {"aaa": [], "min_acc": [], "wc_acc": [], "gap": []}
  for s in range(seeds):
    avgs = []
    for p in range(points):
      seen = [k for k in range(tasks) if steps[p] > starts[k]]
      avgs.append(sum(acc[s, p, k] for k in seen) / len(seen))
    out["aaa"].append(sum(avgs) / points)
    lows = []
    for k in range(tasks - 1):
      lows.append(min(acc[s, p, k] for p in range(points) if steps[p] > ends[k]))
    out["min_acc"].append(sum(lows) / len(lows))
    out["wc_acc"].append(acc[s, -1, -1] / tasks + (1 - 1 / tasks) * out["min_acc"][-1])
    gaps = []
    for k in range(1, tasks):
      prev = lambda p: sum(acc[s, p, j] for j in range(k)) / k
      end = list(steps).index(ends[k - 1])
      inside = [p for p in range(points) if ends[k - 1] < steps[p] <= ends[k]]
      gaps.append(prev(end) - min(prev(p) for p in inside))
    out["gap"].append(sum(gaps) / len(gaps))
  return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("eval_every", [1, 3, 7, 50])
def test_the_metrics_equal_a_brute_force_on_random_curves(eval_every):
  rng = np.random.default_rng(eval_every)
  steps = continual.evaluation_steps(4, 10, eval_every)
  ends = 10 * np.arange(1, 5)
  acc = rng.uniform(size=(3, len(steps), 4))
  want = brute_force(acc, steps, ends)
  assert continual.average_anytime_accuracy(acc, steps, ends) == pytest.approx(want["aaa"])
  assert continual.min_accuracy(acc, steps, ends) == pytest.approx(want["min_acc"])
  assert continual.worst_case_accuracy(acc, steps, ends) == pytest.approx(want["wc_acc"])
  assert continual.stability_gap(acc, steps, ends).mean == pytest.approx(want["gap"])
  summary = continual.summaries(acc, steps, ends)
  assert summary["aaa"]["per_seed"] == pytest.approx(list(want["aaa"]))
  assert summary["stability_gap"]["mean"] == pytest.approx(want["gap"].mean())


def test_evaluation_points_are_every_nth_step_and_every_task_end():
  # Counted in each task from its start, as Avalanche's eval_every counts iterations.
  assert continual.evaluation_steps(3, 7, 5).tolist() == [5, 7, 12, 14, 19, 21]
  assert continual.evaluation_steps(2, 4, 100).tolist() == [4, 8]  # task ends remain
  with pytest.raises(ArgumentError, match="eval_every=0"):
    continual.evaluation_steps(2, 4, 0)


def test_one_task_has_no_min_acc_or_gap_and_the_summaries_say_none():
  acc = np.array([[[0.5], [0.7]]])
  summary = continual.summaries(acc, np.array([1, 2]), np.array([2]))
  assert summary["min_acc"] is None and summary["stability_gap"] is None
  assert summary["wc_acc"]["mean"] == pytest.approx(0.7)
  json.dumps(summary, allow_nan=False)  # metrics.json has no NaN


def test_a_curve_without_a_task_end_point_is_refused():
  with pytest.raises(ArgumentError, match="missing \\[8\\]"):
    continual.average_anytime_accuracy(HAND[:, :3], STEPS[:3], ENDS)


def test_the_evaluation_subset_depends_on_the_labels_alone():
  y = np.repeat(np.arange(4), [10, 12, 9, 30])
  rows = continual.evaluation_subset(y, classes_per_task=2, samples_per_task=7)
  assert np.array_equal(np.bincount(y[rows]), [4, 4, 4, 4])  # ceil(7 / 2) per class
  assert np.array_equal(rows, continual.evaluation_subset(y, 2, 7))
  with pytest.raises(ArgumentError, match="class 2 has 9"):
    continual.evaluation_subset(y, 2, 20)


# ---------------------------------------------------------------- the compiled curve


@pytest.fixture(scope="module")
def digits_setup():
  ds = data_lib.load("digits", "embedded")
  bench = data_lib.class_incremental(ds.train_x, ds.train_y, 5, 10, [0, 1], samples_per_task=60)
  x, y = data_lib.to_unit_float(bench.train_x), bench.train_y
  test_x, test_y = data_lib.to_unit_float(ds.test_x), ds.test_y
  model = rar_jax.create_model("mlp", 10)
  tx = rar_jax.make_optimizer(0.1)
  cfg, chain = rar_jax.build_method("er_rar", num_classes=10, mem_size=30)
  states = rar_jax.init_states(model, tx, cfg, chain, [0, 1], x[:10])
  step = rar_jax.make_train_step(model, tx, cfg, chain)
  return locals()


@pytest.mark.parametrize("batching", ["vmap", "map"])
@pytest.mark.parametrize("stream_loop", ["scan", "host"])
def test_evaluating_in_the_stream_changes_no_training_and_equals_the_saved_states(
  digits_setup, batching, stream_loop
):
  d = digits_setup
  index = jnp.asarray(d["bench"].streams.index.reshape(2, -1, 10))[:, :20]
  toc = jnp.asarray(d["bench"].streams.task_of_class)
  x, y, tx_, ty_ = (jnp.asarray(d[k]) for k in ("x", "y", "test_x", "test_y"))
  one = evaluator_lib.make_run_evaluator(d["model"], 5, chunk=200)
  run = loop.make_stream_runner(d["step"], batching, stream_loop, one)
  # 20 steps as 4 segments of 5, each followed by an evaluation.
  states, metrics, acc = run(d["states"], x, y, index.reshape(2, 4, 5, 10), tx_, ty_, toc)
  plain = loop.make_stream_runner(d["step"], batching, stream_loop)
  plain_states, plain_metrics = plain(d["states"], x, y, index)
  for a, b in zip(
    jax.tree.leaves((states, metrics)), jax.tree.leaves((plain_states, plain_metrics))
  ):
    assert np.array_equal(np.asarray(a), np.asarray(b))  # bit for bit
  assert acc.shape == (2, 4, 5)
  # The curve's second point (step 10) is the accuracy of the parameters saved after 10 steps.
  saved, _ = plain(d["states"], x, y, index[:, :10])
  np.testing.assert_array_equal(acc[:, 1], rar_jax.evaluate(d["model"], saved, tx_, ty_, toc))


def test_run_stream_with_curves_meets_the_accuracy_after_each_task(digits_setup):
  d = digits_setup
  streams = d["bench"].streams
  states, metrics, curves = rar_jax.run_stream_with_curves(
    d["step"], d["model"], d["states"], d["x"], d["y"], streams.index,
    d["test_x"], d["test_y"], streams.task_of_class, eval_every=4,
  )  # fmt: skip
  per_task = streams.index.shape[2]
  assert curves.steps.tolist() == continual.evaluation_steps(5, per_task, 4).tolist()
  assert curves.accuracy.shape == (2, len(curves.steps), 5)
  assert metrics["loss_current"].shape == (2, 5 * per_task)
  # The last point is the final evaluation.
  final = rar_jax.evaluate(d["model"], states, d["test_x"], d["test_y"], streams.task_of_class)
  np.testing.assert_array_equal(curves.accuracy[:, -1], final)
  with pytest.raises(ArgumentError, match="tasks, steps, batch"):
    rar_jax.run_stream_with_curves(
      d["step"], d["model"], d["states"], d["x"], d["y"], streams.index[:, 0],
      d["test_x"], d["test_y"], streams.task_of_class, eval_every=4,
    )  # fmt: skip


# ---------------------------------------------------------------- the runner


def digits_config(**overrides):
  config = load_file(os.path.join(ROOT, "configs", "default.py"))
  config.update(dict(methods="er_rar", num_seeds=2, progress=False, rar_samples=0), **overrides)
  return config


def test_a_run_with_continual_evaluation_trains_alike_and_writes_its_curves(tmp_path):
  off = experiment.train_and_evaluate(digits_config(plot=False), str(tmp_path / "off"))["er_rar"]
  config = digits_config(eval_every=10, eval_samples_per_task=40, methods="er,er_rar")
  on = experiment.train_and_evaluate(config, str(tmp_path / "on"))
  assert "continual" not in off
  assert on["er_rar"]["acc_matrix"] == off["acc_matrix"]  # training unchanged
  c = on["er_rar"]["continual"]
  assert c["steps"] == continual.evaluation_steps(5, 28, 10).tolist()
  assert np.asarray(c["accuracy"]).shape == (2, len(c["steps"]), 5)
  assert c["aaa"]["per_seed"] == pytest.approx(
    list(continual.average_anytime_accuracy(np.asarray(c["accuracy"]), c["steps"], c["task_ends"]))
  )
  for name in ("continual.png", "er/continual.png", "er_rar/continual.png"):
    assert os.path.getsize(tmp_path / "on" / name) > 10_000
  table = (tmp_path / "on" / "comparison.md").read_text()
  assert "AAA" in table and "WC-ACC" in table and "stability gap" in table
  with open(tmp_path / "on" / "er" / "metrics.jsonl") as f:
    lines = [json.loads(l) for l in f]
  points = [l["step"] for l in lines if "continual/average_accuracy_seen" in l]
  assert points == c["steps"]


@pytest.mark.slow
def test_a_run_resumed_mid_task_has_the_curves_of_an_uninterrupted_one(tmp_path):
  config = digits_config(
    eval_every=4, log_every_steps=2, checkpoint_every_steps=2, keep_checkpoints=100, plot=False
  )
  workdir = str(tmp_path / "run")
  full = experiment.train_and_evaluate(config, workdir)["er_rar"]
  # Drop every checkpoint after step 40 (inside task 2): the rerun resumes there.
  for name in os.listdir(os.path.join(workdir, "checkpoints")):
    if int(name) > 40:
      shutil.rmtree(os.path.join(workdir, "checkpoints", name))
  os.remove(os.path.join(workdir, "metrics.json"))
  again = experiment.train_and_evaluate(config, workdir)["er_rar"]
  assert again["continual"]["accuracy"] == full["continual"]["accuracy"]
  assert again["acc_matrix"] == full["acc_matrix"]


def test_a_sweep_carries_a_curve_per_cell(tmp_path):
  config = digits_config(eval_every=14, sweep="beta_coef=0.1,0.5", num_seeds=1, plot=False)
  result = experiment.train_and_evaluate(config, str(tmp_path))["er_rar"]
  curves = [np.asarray(c["continual"]["accuracy"]) for c in result["cells"]]
  assert [c.shape for c in curves] == [(1, 10, 5)] * 2
  assert not np.array_equal(curves[0], curves[1])


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(eval_every=-1), "config.eval_every=-1 is invalid"),
    (dict(eval_samples_per_task=-3, eval_every=5), "config.eval_samples_per_task=-3 is invalid"),
    (dict(eval_samples_per_task=10), "needs continual evaluation: set config.eval_every"),
    (dict(eval_every=5, eval_samples_per_task=1000), "config.eval_samples_per_task=1000 is larger"),
  ],
)
def test_bad_continual_keys_are_one_line_naming_the_key(tmp_path, overrides, match):
  with pytest.raises(ConfigError, match=match) as e:
    experiment.train_and_evaluate(digits_config(**overrides), str(tmp_path))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize(
  "evaluation", [{}, dict(eval_classifier="ncm", ema_decay=0.9)], ids=["head", "ncm_ema"]
)
def test_the_curve_meets_the_accuracy_matrix_at_every_task_end(tmp_path, evaluation):
  """On the whole split, a task's last point is the end-of-task evaluation (with the
  output layer, and with NCM on averaged weights)."""
  config = digits_config(eval_every=10, methods="er", num_seeds=2, plot=False, **evaluation)
  r = experiment.train_and_evaluate(config, str(tmp_path))["er"]
  c = r["continual"]
  ends = [c["steps"].index(e) for e in c["task_ends"]]
  np.testing.assert_array_equal(np.asarray(c["accuracy"])[:, ends], np.asarray(r["acc_matrix"]))


def test_the_accuracy_over_the_classes_seen_so_far():
  labels = np.array([[0, 0], [1, 0], [0, 1], [3, 3]])  # steps x batch; class 2 never comes
  first = continual.first_seen_steps(labels, 4)
  assert first.tolist() == [1, 2, 5, 4]
  class_acc = np.array([[[0.5, 0.1, 0.9, 0.7], [0.6, 0.2, np.nan, 0.3]]])  # 2 points
  seen = continual.average_seen_class_accuracy(class_acc, np.array([1, 4]), first[None])
  # Step 1 sees class 0; step 4 sees 0, 1, 3 (class 2 unseen, and without rows there).
  assert seen[0].tolist() == pytest.approx([0.5, (0.6 + 0.2 + 0.3) / 3])


def test_a_blurry_run_averages_the_classes_it_has_seen(tmp_path):
  config = digits_config(stream="blurry", eval_every=5, methods="er", plot=False)
  r = experiment.train_and_evaluate(config, str(tmp_path))["er"]
  c = r["continual"]
  seen = np.asarray(c["accuracy_seen_classes"])
  assert seen.shape == (2, len(c["steps"]))
  assert c["aaa_seen_classes"]["per_seed"] == pytest.approx(list(seen.mean(-1)))
  # Blurry classes of later tasks arrive early: at the first point more classes are seen
  # than the first task's two, so the average over seen classes is not task 1's accuracy.
  first_point = np.asarray(c["accuracy"])[:, 0, 0]
  assert not np.allclose(seen[:, 0], first_point)


def test_a_task_is_cut_into_whole_segments_and_its_short_last_one():
  from rar_jax.runner import chunks

  # 28 steps, a point every 10, progress every 25: chunks of two segments where they fit.
  cut = chunks.task_chunks(28, 25, 10)
  assert [(c.start, c.steps, c.segment) for c in cut] == [(0, 20, 10), (20, 8, 8)]
  assert [c.shape for c in cut] == [(2, 10), (1, 8)]
  assert cut[0].points(56) == [66, 76] and cut[1].points(56) == [84]
  assert sum(c.steps for c in chunks.task_chunks(100, 30, 7)) == 100
  # Without continual evaluation: log_every_steps chunks, as before.
  assert [c.steps for c in chunks.task_chunks(28, 10)] == [10, 10, 8]
  # A resumed position between segments starts with the rest of its chunk; inside one, refused.
  assert [(c.start, c.steps) for c in chunks.remaining(cut, 10)] == [(10, 10), (20, 8)]
  with pytest.raises(rar_jax.errors.CheckpointError, match="inside an evaluation segment"):
    chunks.remaining(cut, 5)


@pytest.mark.slow
def test_checkpoints_keep_their_cadence_when_evaluation_segments_do_not_divide_it(tmp_path):
  # Segments of 3 steps (one per chunk): chunks end at 3, 6, 9, ... and the task's end. A
  # checkpoint every 4 steps is written at the first chunk end at or after each multiple
  # of 4 (4 -> 6, 8 -> 9, 12, 16 -> 18, ...), and at the task's end. Before, only the
  # chunk ends that were multiples of 4 (12, 24, ...) got one.
  config = digits_config(
    eval_every=3,
    log_every_steps=4,
    checkpoint_every_steps=4,
    keep_checkpoints=1000,
    num_tasks=2,
    num_seeds=1,
    plot=False,
  )
  steps = experiment.train_and_evaluate(config, str(tmp_path))["er_rar"]["steps_per_task"]
  written = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())
  ends = [-(-m // 3) * 3 for m in range(4, steps, 4)]  # past the last segment: the task's end
  in_task = sorted({e for e in ends if e < steps})
  assert in_task[:5] == [6, 9, 12, 18, 21]
  assert written == in_task + [steps] + [steps + p for p in in_task] + [2 * steps]


@pytest.mark.parametrize(
  "every, eval_every, resume_at, expected",
  [
    (4, 3, 0, [6, 9, 12, 18, 21, 24]),  # one 3-step segment a chunk (log_every_steps=4)
    (4, 3, 6, [9, 12, 18, 21, 24]),  # resumed from the checkpoint at 6
    (2, 5, 0, [5, 10, 15, 20, 25]),  # segments longer than the cadence: every chunk end
    (10, 0, 0, [10, 20]),  # no continual evaluation: chunks of log_every_steps=10
  ],
)
def test_checkpointing_saves_at_the_first_chunk_end_at_or_after_each_multiple(
  every, eval_every, resume_at, expected
):
  from rar_jax.runner import chunks as chunks_lib
  from rar_jax.runner import hooks

  saved = []
  checkpointer = types.SimpleNamespace(save=lambda position, payload: saved.append(position))
  hook = hooks.Checkpointing(checkpointer, every)
  task_steps = 28
  cut = chunks_lib.task_chunks(task_steps, 4 if eval_every else 10, eval_every)
  for c in chunks_lib.remaining(cut, resume_at):
    end = c.start + c.steps
    hook.on_chunk(
      hooks.ChunkEnd(end, 0, 1, end, task_steps, c.steps, {}, True, (), 1.0, lambda: None)
    )
  assert saved == expected  # the task's end (28) is on_task's
