"""End to end, as a user runs it: `python train.py --config ...`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rar_jax import data, experiment
from rar_jax.config_base import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=env)


def check_metrics(path, method, num_seeds, num_tasks):
  with open(path) as f:
    m = json.load(f)
  assert m["method"] == method and m["num_seeds"] == num_seeds
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
  saved = json.loads((tmp_path / "er" / "config.json").read_text())
  assert saved["num_seeds"] == 2 and saved["methods"] == "er,er_rar"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_split_fashion_mnist_from_idx_files(tmp_path):
  out = train("--config", "configs/split_fashion_mnist.py", "--config.samples_per_task=200",
              "--config.num_seeds=2", "--config.mem_size=50", "--workdir", str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  m = check_metrics(tmp_path / "metrics.json", "er_rar", 2, 5)
  assert m["data_source"] == "idx" and m["steps"] == 100


@pytest.mark.slow
def test_tfds_path_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = base_config()
  config.update(dataset="mnist", data_source="tfds", num_seeds=2, samples_per_task=20,
                method="er_rar", mem_size=20, progress=False, plot=False)
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


def test_missing_data_is_one_clear_line(tmp_path):
  out = train("--config", "configs/split_fashion_mnist.py", "--config.data_source=idx",
              f"--config.data_dir={tmp_path}", "--workdir", str(tmp_path / "run"))
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "train-images-idx3-ubyte" in out.stderr and str(tmp_path) in out.stderr
