"""End to end, as a user runs it: `python train.py --config ...`."""

import json
import os

import numpy as np
import pytest
from cli import train

from rar_jax import data
from rar_jax.runner import experiment, hooks
from rar_jax.runner.config import base_config


def digits(**overrides):
  """The embedded digits config end-to-end tests train on, no progress bar."""
  config = base_config()
  config.update(dataset="digits", progress=False, **overrides)
  return config


def check_metrics(path, method, num_seeds, num_tasks):
  with open(path) as f:
    m = json.load(f)
  assert m["method"] == method and m["num_seeds"] == num_seeds
  assert m["host_cpus"] == len(os.sched_getaffinity(0))  # what XLA's CPU matmuls split over
  acc = np.array(m["acc_matrix"])
  assert acc.shape == (num_seeds, num_tasks, num_tasks)
  assert np.all((acc >= 0) & (acc <= 1))
  final = acc[:, -1, :].mean(-1)
  np.testing.assert_allclose(m["final_avg_accuracy"]["per_seed"], final, atol=1e-6)
  assert m["final_avg_accuracy"]["se2"] >= 0
  for key in ("final_forgetting", "train_seconds", "compile_seconds", "steps", "steps_per_second"):
    assert key in m
  assert m["steps_per_second"] > 0
  return m


@pytest.mark.slow
def test_default_config_runs_offline(tmp_path):
  out = train("--config", "configs/default.py", "--config.num_seeds=2", "--workdir", str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  for method in ("er", "er_rar"):
    m = check_metrics(tmp_path / method / "metrics.json", method, 2, 5)
    assert m["final_avg_accuracy"]["mean"] > 0.5  # 10 digit classes: chance is 0.1
    assert (tmp_path / method / "accuracy.png").stat().st_size > 1000
    assert (tmp_path / method / "acc_matrix.csv").exists()
  assert "| er_rar |" in out.stdout and (tmp_path / "comparison.md").exists()
  # The comparison files say how their numbers were evaluated.
  assert "test split" in (tmp_path / "comparison.md").read_text().splitlines()[0]
  compared = json.loads((tmp_path / "comparison.json").read_text())
  assert compared["er"]["eval_classifier"] == "head" and compared["er"]["eval_protocol"] == "class"
  assert (tmp_path / "comparison.png").stat().st_size > 1000
  for method in ("er", "er_rar"):  # each folder's config names its own method
    saved = json.loads((tmp_path / method / "config.json").read_text())
    assert saved["num_seeds"] == 2 and saved["methods"] == method and "method" not in saved
  assert "\r" not in out.stderr  # captured, not a terminal: plain lines, no bar redraws


@pytest.mark.slow
@pytest.mark.skipif(
  not os.path.isdir(data.DEBIAN_FASHION_MNIST),
  reason="Debian's dataset-fashion-mnist is not installed",
)
def test_split_fashion_mnist_from_idx_files(tmp_path):
  out = train(
    "--config",
    "configs/split_fashion_mnist.py",
    "--config.samples_per_task=200",
    "--config.num_seeds=2",
    "--config.mem_size=50",
    "--workdir",
    str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  m = check_metrics(tmp_path / "metrics.json", "er_rar", 2, 5)
  assert m["data_source"] == "idx" and m["steps"] == 100


@pytest.mark.slow
def test_tfds_path_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = base_config()
  config.update(
    dataset="mnist",
    data_source="tfds",
    num_seeds=2,
    samples_per_task=20,
    methods="er_rar",
    mem_size=20,
    progress=False,
    plot=False,
  )
  with tfds.testing.mock_data(num_examples=200):
    results = experiment.train_and_evaluate(config, str(tmp_path))
  assert results["er_rar"]["data_source"] == "tfds"
  check_metrics(tmp_path / "metrics.json", "er_rar", 2, 5)


def test_bad_config_is_one_line_not_a_traceback(tmp_path):
  out = train("--config", "configs/default.py", "--config.mem_size=0", "--workdir", str(tmp_path))
  assert out.returncode == 2
  assert "mem_size=0" in out.stderr and "Traceback" not in out.stderr
  out = train("--config", "configs/default.py", "--config.epsilon=0.1", "--workdir", str(tmp_path))
  assert out.returncode == 2 and "epsilon_fgsm" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("arg", ["--config.mem_size=abc", "--config.num_seeds=2.5"])
def test_a_value_of_the_wrong_type_is_one_line(tmp_path, arg):
  out = train("--config", "configs/default.py", arg, "--workdir", str(tmp_path))
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.startswith("error: flag " + arg) and len(out.stderr.splitlines()) == 1


def test_missing_data_is_one_clear_line(tmp_path):
  out = train(
    "--config",
    "configs/split_fashion_mnist.py",
    "--config.data_source=idx",
    f"--config.data_dir={tmp_path}",
    "--workdir",
    str(tmp_path / "run"),
  )
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "train-images-idx3-ubyte" in out.stderr and str(tmp_path) in out.stderr


# ---------------------------------------------------------------- first-try trust


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory):
  """A small two-method run, its stderr captured as a log file would (not a terminal)."""
  import contextlib
  import io

  workdir = tmp_path_factory.mktemp("two_methods")
  config = base_config()
  config.update(
    dataset="digits",
    methods="er,er_rar",
    num_seeds=2,
    samples_per_task=100,
    mem_size=40,
    log_every_steps=5,
    keep_checkpoints=0,
  )
  err, out = io.StringIO(), io.StringIO()
  old = hooks.LOG_LINE_SECONDS
  hooks.LOG_LINE_SECONDS = 0.0  # a line per chunk
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
      results = experiment.train_and_evaluate(config, str(workdir))
  finally:
    hooks.LOG_LINE_SECONDS = old
  return workdir, results, err.getvalue(), out.getvalue()


@pytest.mark.slow
def test_each_method_folder_names_its_own_method(two_methods):
  workdir, results, _, _ = two_methods
  assert sorted(results) == ["er", "er_rar"]
  for method in ("er", "er_rar"):
    saved = json.loads((workdir / method / "config.json").read_text())
    assert saved["methods"] == method and "method" not in saved
    assert json.loads((workdir / method / "metrics.json").read_text())["method"] == method


def test_old_method_override_is_refused_not_ignored(tmp_path):
  # configs/default.py sets methods=er,er_rar; the old key once lost to it silently.
  out = train(
    "--config", "configs/default.py", "--config.method=mir_rar", "--workdir", str(tmp_path)
  )
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "config.methods" in out.stderr and not os.listdir(tmp_path)


@pytest.mark.slow
def test_log_reads_as_plain_lines(two_methods):
  _, _, err, _ = two_methods
  assert "\r" not in err
  lines = err.splitlines()
  # 10 steps per task in chunks of 5: a line per chunk, tasks counted from 1.
  progress = [l for l in lines if l.startswith("[er] step ")]
  assert len(progress) == 10, err
  assert progress[0].startswith("[er] step 5/50 (10%), task 1/5, loss ")
  assert progress[-1].startswith("[er] step 50/50 (100%), task 5/5, loss ")
  assert sum(l.startswith("[er_rar] after task ") for l in lines) == 5


@pytest.mark.slow
def test_progress_speed_is_the_tables_speed(two_methods):
  _, results, err, out = two_methods
  last = [l for l in err.splitlines() if l.startswith("[er_rar] step 50/50")][-1]
  shown = float(last.rsplit(", ", 1)[1].split()[0])
  assert shown == round(results["er_rar"]["steps_per_second"])
  assert f"{results['er_rar']['steps_per_second']:.0f} |" in out
  assert "all seeds of a method advancing together" in out and "evaluation" in out


@pytest.mark.slow
def test_comparison_plot_has_a_line_and_band_per_method(two_methods):
  from matplotlib.collections import PolyCollection

  from rar_jax.runner import report

  workdir, results, _, _ = two_methods
  assert (workdir / "comparison.png").stat().st_size > 1000
  accs = {n: np.asarray(r["acc_matrix"]) for n, r in results.items()}
  fig = report.comparison_figure(accs, "t")
  ax = fig.axes[0]
  assert [l.get_label() for l in ax.get_lines()] == ["er", "er_rar"]
  np.testing.assert_allclose(
    ax.get_lines()[0].get_ydata(), results["er"]["avg_accuracy_curve"], atol=1e-6
  )
  assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
  assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2


def test_heat_map_counts_tasks_from_one_and_labels_stay_readable():
  from rar_jax.runner import report

  acc = np.array([[[0.95, 0.1], [0.2, 0.9]]])
  fig = report.accuracy_figure(acc, "t")
  heat = fig.axes[0]
  assert [t.get_text() for t in heat.get_xticklabels()] == ["1", "2"]
  assert [t.get_text() for t in heat.get_yticklabels()] == ["1", "2"]
  colors = {t.get_text(): t.get_color() for t in heat.texts}
  assert colors["0.95"] == "black" and colors["0.10"] == "white"  # yellow vs dark purple


@pytest.mark.slow
def test_nan_message_counts_from_one_and_names_no_missing_checkpoint(tmp_path):
  config = digits(methods="er", num_seeds=1, samples_per_task=100, log_every_steps=5, plot=False)
  config.learning_rate = 1e30
  with pytest.raises(experiment.TrainingDiverged) as e:
    experiment.train_and_evaluate(config, str(tmp_path))
  msg = str(e.value)
  assert "task 1/5, steps 1-5 of the task" in msg and "no checkpoint was written" in msg
  assert "is kept" not in msg


def _nan_message(ckpt) -> str:
  # Task 2 of 5 (0-based 1), its first chunk of 5 steps went NaN.
  with pytest.raises(experiment.TrainingDiverged) as e:
    hooks.NanGuard("er", 0.1, ckpt).on_chunk(_chunk([0], position=25, task=1))
  return str(e.value)


def test_nan_message_names_the_checkpoint_that_exists(tmp_path):
  from rar_jax.runner import checkpoint

  off = _nan_message(checkpoint.NoCheckpoints())
  assert "checkpointing is off" in off and "is kept" not in off
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 2)
  ckpt.save(28, {"x": np.zeros(3)})
  msg = _nan_message(ckpt)
  ckpt.close()
  assert "task 2/5, steps 1-5 of the task" in msg and "(step 28) is kept in" in msg


def test_help_is_a_success():
  out = train("--help")
  assert out.returncode == 0 and "--workdir" in out.stdout


def test_too_many_samples_per_task_warns_with_the_number_used(capsys):
  config = base_config()
  config.update(dataset="digits", samples_per_task=5000, num_seeds=1)
  streams = experiment.prepare_data(config).streams
  used = streams.index.shape[2] * config.batch_size
  assert 0 < used < 5000
  err = capsys.readouterr().err
  assert "samples_per_task=5000" in err and f"every task uses {used} samples" in err


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_metric_files_hold_the_run_numbers(two_methods):
  # metrics.jsonl and the TensorBoard events (read back with TensorBoard's own
  # reader) carry the numbers metrics.json reports, at the right steps.
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  workdir, results, _, _ = two_methods
  for method in ("er", "er_rar"):
    lines = _jsonl(workdir / method / "metrics.jsonl")
    train = [l for l in lines if "train/loss_current" in l]
    evals = [l for l in lines if "eval/average_accuracy" in l]
    assert [l["step"] for l in train] == list(range(5, 55, 5))  # a line per chunk of 5
    assert [l["step"] for l in evals] == list(range(10, 60, 10))  # a line per task
    acc = np.asarray(results[method]["acc_matrix"]).mean(0)  # seed mean [after, on]
    for t, l in enumerate(evals):
      np.testing.assert_allclose(
        [l[f"eval/accuracy_task_{j + 1}"] for j in range(t + 1)], acc[t, : t + 1], atol=1e-6
      )
    np.testing.assert_allclose(
      evals[-1]["eval/average_accuracy"], results[method]["final_avg_accuracy"]["mean"], atol=1e-6
    )
    # No replay in the first task (nothing of another label yet), 10 rows after.
    assert [l["train/replay_count"] for l in train[:2]] == [0, 0]
    assert all(l["train/replay_count"] == 10 for l in train[2:])
    events = EventAccumulator(str(workdir / method))
    events.Reload()
    scalars = events.Scalars("eval/average_accuracy")
    assert [e.step for e in scalars] == [l["step"] for l in evals]
    np.testing.assert_allclose(
      [e.value for e in scalars], [l["eval/average_accuracy"] for l in evals], atol=1e-6
    )
  rar = [l for l in _jsonl(workdir / "er_rar" / "metrics.jsonl") if "train/loss_current" in l]
  eps = 0.3  # base_config's epsilon_fgsm
  assert all(
    0 < l["train/perturbation_mean"] <= l["train/perturbation_max"] <= eps + 1e-6 for l in rar[2:]
  )
  er = _jsonl(workdir / "er" / "metrics.jsonl")
  assert not any("train/perturbation_max" in l for l in er)


@pytest.mark.slow
def test_rar_samples_picture_only_for_rar_methods(two_methods):
  workdir, _, _, _ = two_methods
  assert (workdir / "er_rar" / "rar_samples.png").stat().st_size > 5000
  assert not (workdir / "er" / "rar_samples.png").exists()


def _cell(beta, eps, acc, **other):
  return {
    "overrides": dict(beta_coef=beta, epsilon_fgsm=eps, **other),
    "final_avg_accuracy": {"mean": acc},
  }


def test_sensitivity_grid_by_hand():
  from rar_jax.runner import report

  cells = [
    _cell(0.1, 0.3, 0.70),
    _cell(0.1, 0.1, 0.60),
    _cell(0.5, 0.1, 0.50),
    _cell(0.5, 0.3, 0.40),
  ]
  betas, epss, grid = report.sensitivity_grid({"cells": cells})
  assert betas == [0.1, 0.5] and epss == [0.1, 0.3]
  np.testing.assert_array_equal(grid, [[0.60, 0.70], [0.50, 0.40]])
  # Another swept key: the best cell over it.
  cells += [_cell(0.1, 0.3, 0.75, learning_rate=0.2)]
  for c in cells[:4]:
    c["overrides"]["learning_rate"] = 0.1
  np.testing.assert_array_equal(
    report.sensitivity_grid({"cells": cells})[2], [[0.60, 0.75], [0.50, 0.40]]
  )
  assert report.sensitivity_grid({"cells": [{"overrides": {"beta_coef": 0.1}}]}) is None
  one_pair = [_cell(0.1, 0.3, 0.70, learning_rate=lr) for lr in (0.05, 0.1)]
  assert report.sensitivity_grid({"cells": one_pair}) is None  # one (beta, eps) pair: no map
  # A cell with a diverged run never counts; a pair with only such cells is NaN.
  cells[4]["diverged_seeds"] = [3]
  cells[3]["diverged_seeds"] = [0]
  np.testing.assert_array_equal(
    report.sensitivity_grid({"cells": cells})[2], [[0.60, 0.70], [0.50, np.nan]]
  )


@pytest.mark.slow
def test_a_beta_epsilon_sweep_writes_its_sensitivity_picture(tmp_path):
  config = digits(
    methods="er_rar",
    num_seeds=1,
    samples_per_task=50,
    mem_size=20,
    keep_checkpoints=0,
    sweep="beta_coef=0.1,0.5;epsilon_fgsm=0.1,0.3",
  )
  result = experiment.train_and_evaluate(config, str(tmp_path))["er_rar"]
  assert (tmp_path / "sensitivity.png").stat().st_size > 5000
  from rar_jax.runner import report

  fig = report.sensitivity_figure(result, "t")
  shown = fig.axes[0].get_images()[0].get_array()
  by_cell = {
    (c["overrides"]["beta_coef"], c["overrides"]["epsilon_fgsm"]): c["final_avg_accuracy"]["mean"]
    for c in result["cells"]
  }
  np.testing.assert_allclose(shown, [[by_cell[b, e] for e in (0.1, 0.3)] for b in (0.1, 0.5)])


def _diverging_sweep(tmp_path, sweep):
  config = digits(
    methods="er",
    num_seeds=2,
    samples_per_task=100,
    log_every_steps=5,
    keep_checkpoints=0,
    plot=False,
    sweep=sweep,
  )
  return lambda: experiment.train_and_evaluate(config, str(tmp_path))["er"]


@pytest.mark.slow
def test_a_diverging_sweep_cell_is_named_marked_and_never_best(tmp_path, capsys):
  # The 1e30 cell diverges in its first chunk; the 0.1 cell trains on.
  result = _diverging_sweep(tmp_path, "learning_rate=1e30,0.1")()
  err = capsys.readouterr().err
  assert err.count("NaN/Inf") == 1 and "sweep cells learning_rate=1e+30:" in err
  cells = {c["overrides"]["learning_rate"]: c for c in result["cells"]}
  assert cells[1e30]["diverged_seeds"] == [0, 1] and cells[0.1]["diverged_seeds"] == []
  assert result["best_cell"] == {"learning_rate": 0.1}
  assert result["final_avg_accuracy"] == cells[0.1]["final_avg_accuracy"]
  assert 0.5 < result["final_avg_accuracy"]["mean"] <= 1.0  # the good cell really trained
  with open(tmp_path / "sweep.md") as f:
    assert "(diverged: seeds 0, 1)" in f.read()
  # The progress means skip the diverged runs: the written losses stay numbers.
  rows = _jsonl(tmp_path / "metrics.jsonl")
  losses = [r["train/loss_current"] for r in rows if "train/loss_current" in r]
  assert losses and all(isinstance(v, float) for v in losses)


@pytest.mark.slow
def test_a_sweep_stops_when_every_cell_diverged(tmp_path):
  with pytest.raises(experiment.TrainingDiverged) as e:
    _diverging_sweep(tmp_path, "learning_rate=1e30,1e31")()
  msg = str(e.value)
  assert "every sweep cell has a diverged run" in msg and "learning_rate=1e+30" in msg


def _chunk(diverged_runs, finite=None, **fields):
  """A chunk of 5 steps ending at step 5 of task 1 of 5 (``fields`` override)."""
  event = dict(
    position=5,
    task=0,
    num_tasks=5,
    task_position=5,
    steps_per_task=20,
    chunk_steps=5,
    scalars={},
    finite=not diverged_runs if finite is None else finite,
    diverged_runs=tuple(diverged_runs),
    steps_per_second=1.0,
    payload=dict,
  )
  return hooks.ChunkEnd(**{**event, **fields})


def test_nan_guard_stops_a_sweep_once_every_cell_has_a_diverged_run(capsys):
  # Two cells x two seeds: runs 0, 1 are cell a; runs 2, 3 cell b.
  from rar_jax.runner import checkpoint

  guard = hooks.NanGuard("er", 0.1, checkpoint.NoCheckpoints(), ["a", "a", "b", "b"])
  guard.on_chunk(_chunk([0]))  # one seed of a: b is clean, go on
  guard.on_chunk(_chunk([], finite=False))  # a known run still NaN: nothing new to say
  err = capsys.readouterr().err
  assert err.count("NaN/Inf") == 1 and "sweep cells a:" in err
  with pytest.raises(
    experiment.TrainingDiverged, match="every sweep cell has a diverged run, last b"
  ):
    guard.on_chunk(_chunk([3]))  # one seed of b: no clean cell is left


def test_nan_guard_knows_the_runs_that_diverged_before_a_resume(capsys):
  from rar_jax.runner import checkpoint

  guard = hooks.NanGuard("er", 0.1, checkpoint.NoCheckpoints(), ["a", "a", "b", "b"], diverged={0})
  guard.on_chunk(_chunk([], finite=False))  # run 0 NaN again after the resume: known
  assert capsys.readouterr().err == ""
  guard.on_chunk(_chunk([1]))
  assert "sweep cells a:" in capsys.readouterr().err
