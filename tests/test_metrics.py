"""The headline metrics on small accuracy matrices computed by hand.

``acc[seed, i, j]``: accuracy on task j after training task i. Entries above
the diagonal (tasks not yet seen) are set high on purpose, so a metric that
reads them gives a different number.
"""

import numpy as np
import pytest

from rar_jax.evaluation import metrics

# Seed A: task 0's best accuracy (0.8) comes after task 1, not on the diagonal.
A = [[0.50, 0.90, 0.90], [0.80, 0.70, 0.90], [0.40, 0.60, 0.90]]
# Seed B: task 0 ends above its earlier best (backward transfer: negative drop).
B = [[0.60, 0.95, 0.95], [0.50, 0.90, 0.95], [0.70, 0.20, 0.80]]
ACC = np.array([A, B])


def test_final_average_accuracy_by_hand():
  np.testing.assert_allclose(
    metrics.final_average_accuracy(ACC), [(0.4 + 0.6 + 0.9) / 3, (0.7 + 0.2 + 0.8) / 3], atol=1e-12
  )


def test_forgetting_uses_the_best_earlier_accuracy_by_hand():
  # A: task 0 max(0.5, 0.8) - 0.4 = 0.4; task 1 0.7 - 0.6 = 0.1.
  # B: task 0 max(0.6, 0.5) - 0.7 = -0.1; task 1 0.9 - 0.2 = 0.7.
  np.testing.assert_allclose(metrics.final_forgetting(ACC), [0.25, 0.3], atol=1e-12)


def test_forgetting_ignores_rows_before_a_task_was_learnt_and_the_last_task():
  # Changing what a task scored before it was trained, or the last task's
  # column, must not move forgetting.
  changed = ACC.copy()
  changed[:, 0, 1] = 1.0
  changed[:, 0:2, 2] = 1.0
  changed[:, 2, 2] = 0.0
  np.testing.assert_allclose(
    metrics.final_forgetting(changed), metrics.final_forgetting(ACC), atol=1e-12
  )


def test_one_task_has_zero_forgetting():
  np.testing.assert_array_equal(metrics.final_forgetting(np.full((3, 1, 1), 0.7)), np.zeros(3))


def test_curve_averages_only_the_tasks_seen_by_hand():
  np.testing.assert_allclose(
    metrics.average_accuracy_curve(ACC),
    [[0.5, 0.75, (0.4 + 0.6 + 0.9) / 3], [0.6, 0.7, (0.7 + 0.2 + 0.8) / 3]],
    atol=1e-12,
  )


def brute_force(acc):
  """Plain loops over one seed's matrix: (final average, forgetting, curve)."""
  t = len(acc)
  final = sum(acc[t - 1]) / t
  drops = []
  for j in range(t - 1):
    best = max(acc[i][j] for i in range(j, t - 1))
    drops.append(best - acc[t - 1][j])
  forgetting = sum(drops) / len(drops) if drops else 0.0
  curve = [sum(acc[i][: i + 1]) / (i + 1) for i in range(t)]
  return final, forgetting, curve


@pytest.mark.parametrize("tasks", [2, 4, 5])
def test_metrics_match_loops_over_several_seeds(tasks):
  acc = np.random.default_rng(tasks).uniform(size=(6, tasks, tasks))
  for s in range(6):
    final, forgetting, curve = brute_force(acc[s].tolist())
    assert metrics.final_average_accuracy(acc)[s] == pytest.approx(final, abs=1e-12)
    assert metrics.final_forgetting(acc)[s] == pytest.approx(forgetting, abs=1e-12)
    np.testing.assert_allclose(metrics.average_accuracy_curve(acc)[s], curve, atol=1e-12)


def test_summary_mean_and_two_standard_errors_by_hand():
  s = metrics.summarize(np.array([0.25, 0.3, 0.35]))
  # Sample standard deviation (ddof 1) is 0.05; 2SE = 2 * 0.05 / sqrt(3).
  assert s["mean"] == pytest.approx(0.3, abs=1e-12)
  assert s["se2"] == pytest.approx(2 * 0.05 / np.sqrt(3), abs=1e-12)
  assert s["per_seed"] == pytest.approx([0.25, 0.3, 0.35], abs=1e-12)
  s = metrics.summarize(np.array([0.1, 0.5]))  # std 0.2828..., 2SE = 0.4
  assert s["se2"] == pytest.approx(0.4, abs=1e-12)


def test_summary_of_one_seed_has_no_standard_error():
  s = metrics.summarize(np.array([0.42]))
  assert s["mean"] == pytest.approx(0.42) and s["se2"] is None and s["per_seed"] == [0.42]


def test_slow_rates_keep_their_digits():
  from rar_jax.runner.report import format_rate

  # A conv net on the CPU steps at well under 1 per second: "0 steps/s" said nothing.
  assert [format_rate(x) for x in (0.234, 2.5, 12.4, 1234.6)] == ["0.23", "2.5", "12", "1235"]


def test_titles_name_a_classifier_or_protocol_that_is_not_the_default():
  from rar_jax.runner.report import evaluation_words, sweep_table

  assert evaluation_words("test") == "test split"
  assert evaluation_words("validation", "ncm", "task") == (
    "validation split, nearest-class-mean classifier, task-incremental"
  )
  cell = {
    "overrides": {"beta_coef": 0.1},
    "final_avg_accuracy": {"mean": 0.7, "se2": 0.01, "per_seed": [0.7]},
    "final_forgetting": {"mean": 0.2, "se2": 0.01, "per_seed": [0.2]},
    "diverged_seeds": [],
  }
  result = {"method": "er_rar", "num_seeds": 1, "eval_split": "test", "cells": [cell]}
  assert sweep_table(result).splitlines()[0] == "er_rar, 1 seeds per cell, test split"
  ncm = sweep_table(dict(result, eval_classifier="ncm")).splitlines()[0]
  assert ncm == "er_rar, 1 seeds per cell, test split, nearest-class-mean classifier"
  averaged = [dict(cell, ema_decay=0.9), dict(cell, ema_decay=0.9)]
  title = sweep_table(dict(result, cells=averaged)).splitlines()[0]
  assert title == "er_rar, 1 seeds per cell, test split, weights averaged (ema_decay 0.9)"
  swept = [dict(cell, ema_decay=0.9), dict(cell, ema_decay=0.0)]  # the cells name theirs
  title = sweep_table(dict(result, cells=swept)).splitlines()[0]
  assert title == "er_rar, 1 seeds per cell, test split, ema_decay per cell"


def test_bench_report_refuses_to_combine_parts_evaluated_differently():
  """bench/report.py's `combined` (bench/_tables.py) joins one method's runs split
  over seeds; parts evaluated with another classifier are not the same experiment."""
  import importlib
  import os
  import sys

  bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
  sys.path.insert(0, bench)
  try:
    report = importlib.import_module("_tables")
  finally:
    sys.path.remove(bench)

  def part(seeds, accs, **keys):
    s = {"mean": float(np.mean(accs)), "se2": 0.0, "per_seed": accs}
    base = {"method": "er", "dataset": "d", "eval_split": "test", "steps": 10}
    return dict(base, seeds=seeds, final_avg_accuracy=s, final_forgetting=s, **keys)

  # A part written before metrics.json held eval_classifier ran the output layer.
  joined = report.combined([part([0, 1], [0.6, 0.8]), part([2], [0.7], eval_classifier="head")])
  assert joined["seeds"] == [0, 1, 2]
  np.testing.assert_allclose(joined["final_avg_accuracy"]["mean"], 0.7)
  np.testing.assert_allclose(joined["final_avg_accuracy"]["se2"], 2 * 0.1 / np.sqrt(3))
  with pytest.raises(SystemExit, match="differ in eval_classifier"):
    report.combined([part([0], [0.6]), part([1], [0.7], eval_classifier="ncm")])
  with pytest.raises(SystemExit, match="differ in eval_protocol"):
    report.combined([part([0], [0.6]), part([1], [0.7], eval_protocol="task")])
  with pytest.raises(SystemExit, match="differ in ema_decay"):
    report.combined([part([0], [0.6]), part([1], [0.7], ema_decay=0.9)])
  with pytest.raises(SystemExit, match="share seeds"):
    report.combined([part([0], [0.6]), part([0], [0.7])])


def test_a_long_title_is_wrapped_to_fit_the_sensitivity_picture():
  """matplotlib clips a title wider than its figure; the picture wraps it and
  keeps every word."""
  from rar_jax.runner import report

  def cell(beta, eps):
    s = {"mean": 0.7, "se2": 0.0, "per_seed": [0.7]}
    return {
      "overrides": {"beta_coef": beta, "epsilon_fgsm": eps},
      "final_avg_accuracy": s,
      "final_forgetting": s,
    }

  result = {"cells": [cell(b, e) for b in (0.1, 0.5) for e in (0.1, 0.3)]}
  title = "er_rar (ncm_tune_er_rar), 10 seeds per cell, " + report.evaluation_words(
    "validation", "ncm"
  )
  fig = report.sensitivity_figure(result, title)
  shown = fig.axes[0].get_title()
  fig.canvas.draw()
  box = fig.axes[0].title.get_window_extent()
  assert box.x0 >= 0 and box.x1 <= fig.bbox.x1  # inside the figure, not clipped
  assert shown.split() == (title + " final average accuracy, seed mean").split()


def _cell_result(overrides, final, diverged=()):
  """A sweep cell of 2 seeds x 2 tasks whose final row averages ``final`` per seed."""
  from rar_jax.runner.results import CellResult

  acc = np.full((2, 2, 2), 0.5)
  acc[:, -1, :] = [[final - 0.1, final + 0.1], [final + 0.05, final - 0.05]]
  info = dict(
    dataset="digits",
    data_source="embedded",
    eval_split="test",
    eval_classifier="head",
    eval_protocol="class",
    steps_per_task=3,
    dropped_samples_per_seed=0,
  )
  return CellResult("er", overrides, [0, 1], acc, info, list(diverged))


def test_a_cell_with_a_diverged_seed_is_never_best_even_with_the_highest_accuracy():
  from rar_jax.runner.report import sweep_table
  from rar_jax.runner.results import MethodResult

  # The diverged cell scores highest (its other seed, or a late NaN, can do that):
  # ranked by accuracy alone it would win.
  cells = [
    _cell_result({"beta_coef": 0.1}, 0.6),
    _cell_result({"beta_coef": 0.2}, 0.9, diverged=[1]),
    _cell_result({"beta_coef": 0.3}, 0.7),
    _cell_result({"beta_coef": 0.4}, 0.8, diverged=[0, 1]),
  ]
  result = MethodResult("er", "beta_coef=0.1,0.2,0.3,0.4", cells, {})
  assert [c.final_avg_accuracy["mean"] for c in cells] == pytest.approx([0.6, 0.9, 0.7, 0.8])
  assert result.best is cells[2]
  summary = result.to_dict()
  assert summary["best_cell"] == {"beta_coef": 0.3}
  assert summary["final_avg_accuracy"]["mean"] == pytest.approx(0.7)
  assert summary["diverged_seeds"] == []
  # sweep.md: clean cells first, best first; then the diverged ones, best first.
  rows = [r for r in sweep_table(summary).splitlines() if r.startswith("| beta_coef")]
  assert [r.split(" | ")[0] for r in rows] == [
    "| beta_coef=0.3",
    "| beta_coef=0.1",
    "| beta_coef=0.2",
    "| beta_coef=0.4",
  ]
  # Every cell with a diverged seed: the best of them all, by accuracy.
  bad = [cells[1], cells[3]]
  assert MethodResult("er", "beta_coef=0.2,0.4", bad, {}).best is cells[1]
