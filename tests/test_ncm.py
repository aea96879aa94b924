"""`rar_jax.evaluation.ncm`: nearest-class-mean classification against a NumPy brute
force and a hand-computed case."""

import jax.numpy as jnp
import numpy as np
import pytest

from rar_jax.evaluation import ncm


def numpy_class_means(f, y, valid, num_classes):
  means = np.zeros((num_classes, f.shape[1]))
  present = np.zeros(num_classes, bool)
  for c in range(num_classes):
    rows = [r / np.linalg.norm(r) if np.linalg.norm(r) > 0 else r for r in f[valid & (y == c)]]
    if rows:
      present[c] = True
      m = np.mean(rows, axis=0)
      means[c] = m / np.linalg.norm(m)
  return means, present


def numpy_ncm_predict(f, means, present):
  pred = []
  for r in f:
    u = r / np.linalg.norm(r)
    d = [np.sum((u - means[c]) ** 2) if present[c] else np.inf for c in range(len(means))]
    pred.append(int(np.argmin(d)))
  return np.array(pred)


def test_class_means_and_predictions_match_a_numpy_brute_force():
  rng = np.random.default_rng(0)
  n, dim, num_classes = 40, 6, 5
  f = np.abs(rng.normal(size=(n, dim))) * rng.uniform(0.1, 10, size=(n, 1))  # scales differ
  f[3] = 0.0  # an all-zero ReLU row
  y = rng.choice([0, 1, 2, 4], n)  # class 3 never held
  valid = rng.uniform(size=n) < 0.7
  y[~valid & (y == 4)] = 1
  y[np.flatnonzero(~valid)[0]] = 3  # an invalid (empty) slot holding label 3 must not count
  means, present = ncm.class_means(jnp.asarray(f), jnp.asarray(y), jnp.asarray(valid), num_classes)
  want_means, want_present = numpy_class_means(f, y, valid, num_classes)
  np.testing.assert_array_equal(np.asarray(present), want_present)
  assert not want_present[3]
  np.testing.assert_allclose(np.asarray(means)[want_present], want_means[want_present], atol=1e-6)
  q = np.abs(rng.normal(size=(25, dim)))
  scores = np.asarray(ncm.ncm_scores(jnp.asarray(q), means, present))
  assert np.all(np.isneginf(scores[:, 3]))
  np.testing.assert_array_equal(scores.argmax(1), numpy_ncm_predict(q, want_means, want_present))


def test_a_hand_computed_case_where_raw_means_would_disagree():
  # Class 0: (10, 0) and (0, 1): unit rows (1, 0), (0, 1), unit mean (.707, .707); its raw
  # mean (5, .5) points along x. Class 1: (-1, 1) alone, unit (-.707, .707).
  f = jnp.asarray([[10.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
  y = jnp.asarray([0, 0, 1])
  means, present = ncm.class_means(f, y, jnp.ones(3, bool), 2)
  s = 0.5**0.5
  np.testing.assert_allclose(np.asarray(means), [[s, s], [-s, s]], atol=1e-6)
  # The query (0.05, 1): unit (0.0499, 0.9988); to class 0's mean 2 - 2 * 0.741 = 0.518,
  # to class 1's 2 - 2 * 0.671 = 0.658: class 0. Against the raw means (5, .5) and
  # (-1, 1), Euclidean nearest would be class 1.
  q = jnp.asarray([[0.05, 1.0]])
  scores = np.asarray(ncm.ncm_scores(q, means, present))[0]
  u = np.array([0.05, 1.0]) / np.linalg.norm([0.05, 1.0])
  np.testing.assert_allclose(-scores, [2 - 2 * u @ [s, s], 2 - 2 * u @ [-s, s]], atol=1e-6)
  assert scores.argmax() == 0
  raw = np.array([[5.0, 0.5], [-1.0, 1.0]])
  assert np.argmin(((np.array([0.05, 1.0]) - raw) ** 2).sum(1)) == 1


@pytest.mark.slow
def test_a_checkpoint_reevaluates_to_what_training_evaluated(tmp_path):
  """`experiment.evaluate_checkpoint` on a finished run: with the run's own
  classifier it gives the last row of its acc_matrix bit for bit; with NCM, what
  a run evaluated with NCM from the start gives (training is the same)."""
  import os

  from rar_jax.runner import experiment
  from rar_jax.runner.config import load_file

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_file(os.path.join(root, "configs", "default.py"))
  config.update(methods="er", num_seeds=2, mem_size=40, plot=False, progress=False)
  got = {}
  for classifier in ("head", "ncm"):
    config.eval_classifier = classifier
    workdir = str(tmp_path / classifier)
    got[classifier] = np.asarray(experiment.train_and_evaluate(config, workdir)["er"]["acc_matrix"])
  again = experiment.evaluate_checkpoint(str(tmp_path / "head"), "head")
  assert again["step"] == again["steps"] and again["seeds"] == [0, 1]
  np.testing.assert_array_equal(np.asarray(again["accuracy"]), got["head"][:, -1])
  ncm_after = experiment.evaluate_checkpoint(str(tmp_path / "head"), "ncm")
  np.testing.assert_array_equal(np.asarray(ncm_after["accuracy"]), got["ncm"][:, -1])
  assert not np.array_equal(got["ncm"][:, -1], got["head"][:, -1])
  with pytest.raises(experiment.ConfigError, match="its method folders: head, ncm"):
    experiment.evaluate_checkpoint(str(tmp_path), "ncm")  # the parent of method folders


@pytest.mark.slow
def test_reevaluation_marks_diverged_runs_and_leaves_a_damaged_folder_as_it_was(tmp_path):
  """A sweep cell that diverged keeps NaN weights in the checkpoint: its runs
  get NaN accuracies, not the hits of NaN scores. An unreadable checkpoint
  raises, and `evaluate_checkpoint` moves nothing (training's resume would set
  it aside)."""
  import os

  from rar_jax.runner import experiment
  from rar_jax.runner.config import load_file

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_file(os.path.join(root, "configs", "default.py"))
  config.update(
    methods="er",
    num_seeds=1,
    samples_per_task=100,
    mem_size=20,
    plot=False,
    progress=False,
    sweep="learning_rate=1e30,0.05",
  )
  workdir = str(tmp_path / "run")
  trained = experiment.train_and_evaluate(config, workdir)["er"]
  cells = {c["overrides"]["learning_rate"]: c for c in trained["cells"]}
  assert cells[1e30]["diverged_seeds"] == [0]
  got = experiment.evaluate_checkpoint(workdir, "ncm")
  assert [o["learning_rate"] for o in got["overrides"]] == [1e30, 0.05]
  assert np.isnan(got["accuracy"][0]).all() and np.isfinite(got["accuracy"][1]).all()
  head = experiment.evaluate_checkpoint(workdir, "head")
  np.testing.assert_array_equal(head["accuracy"][1], np.asarray(cells[0.05]["acc_matrix"])[0, -1])

  ckpts = os.path.join(workdir, "checkpoints")
  kept = sorted(os.listdir(ckpts))
  latest = str(max(map(int, kept)))
  for folder, _, files in os.walk(os.path.join(ckpts, latest)):
    for name in files:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(b"garbage")
  before = sorted(os.listdir(workdir))
  with pytest.raises(experiment.ConfigError, match=f"checkpoint {latest} in .* is unreadable"):
    experiment.evaluate_checkpoint(workdir, "ncm")
  assert sorted(os.listdir(workdir)) == before and sorted(os.listdir(ckpts)) == kept


@pytest.mark.slow
def test_a_weight_average_sweep_pairs_with_plain_training_and_reevaluates(tmp_path):
  """``sweep="ema_decay=0,0.9"``: training is the same in both cells, so the
  decay-0 cell is the run without an average bit for bit; the 0.9 cell scores
  otherwise, and its checkpoint (which holds the average) re-evaluates to the
  last row of its accuracy matrix."""
  import os

  from rar_jax.runner import experiment
  from rar_jax.runner.config import load_file

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = load_file(os.path.join(root, "configs", "default.py"))
  config.update(methods="er", num_seeds=2, mem_size=40, plot=False, progress=False)
  plain = experiment.train_and_evaluate(config, str(tmp_path / "plain"))["er"]
  config.sweep = "ema_decay=0,0.9"
  swept = experiment.train_and_evaluate(config, str(tmp_path / "swept"))["er"]
  cells = {c["overrides"]["ema_decay"]: np.asarray(c["acc_matrix"]) for c in swept["cells"]}
  np.testing.assert_array_equal(cells[0.0], np.asarray(plain["acc_matrix"]))
  assert not np.array_equal(cells[0.9][:, -1], cells[0.0][:, -1])
  with open(tmp_path / "swept" / "sweep.md") as f:
    assert f.readline().strip() == "er, 2 seeds per cell, test split, ema_decay per cell"
  again = experiment.evaluate_checkpoint(str(tmp_path / "swept"), "head")
  assert [o["ema_decay"] for o in again["overrides"]] == [0.0, 0.9]
  np.testing.assert_array_equal(
    np.asarray(again["accuracy"]), np.concatenate([cells[0.0][:, -1], cells[0.9][:, -1]])
  )
