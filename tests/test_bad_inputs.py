"""Every bad input we tried, and the message it gets. Each must fail before any
work with one message naming the key, the value and what is allowed."""

import gzip
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli import ROOT, train

import rar_jax
from rar_jax import data
from rar_jax.runner import experiment
from rar_jax.runner.config import base_config

# (overrides, fragments the message must contain)
BAD_CONFIGS = [
  (dict(mem_size=0), ["mem_size=0", "int >= 1"]),
  (dict(mem_size=-5), ["mem_size=-5"]),
  (dict(batch_size_mem=300), ["batch_size_mem=300", "mem_size=200"]),
  (dict(epsilon_fgsm=-0.1), ["epsilon_fgsm=-0.1", ">= 0"]),
  (dict(beta_coef=1.5), ["beta_coef=1.5", "[0.0, 1.0]"]),
  (dict(beta_coef=-0.1), ["beta_coef=-0.1"]),
  (dict(iter_fgsm=0), ["iter_fgsm=0", "int >= 1"]),
  (dict(alpha_fgsm=-1.0), ["alpha_fgsm=-1.0"]),
  (dict(mixup_alpha=0.0), ["mixup_alpha=0.0", "> 0"]),
  (dict(methods="sgd"), ["'sgd'", "er_rar"]),
  (dict(methods="er,foo"), ["'foo'"]),
  (dict(methods=""), ["methods=''", "'er,er_rar'"]),
  (dict(methods="er,er"), ["methods='er,er'", "different"]),
  (dict(method="mir_rar"), ["config.method='mir_rar'", "config.methods"]),  # the old key
  (dict(dataset="imagenet"), ["dataset='imagenet'", "fashion_mnist"]),
  (dict(model="vit"), ["model='vit'", "resnet18_reduced"]),
  (dict(feature_layer="conv9"), ["feature_layer='conv9'", "penultimate"]),
  (dict(num_tasks=20), ["num_tasks=20", "divide"]),
  (dict(num_tasks=3), ["num_tasks=3", "divide"]),
  (dict(num_seeds=0), ["num_seeds=0"]),
  (dict(storage_policy="fifo"), ["storage_policy='fifo'", "class_balanced"]),
  (dict(attack_target="logits"), ["attack_target='logits'", "features"]),
  (dict(batch_norm_rows="both"), ["batch_norm_rows='both'", "joint"]),
  (dict(buffer_update="never"), ["buffer_update='never'", "per_experience"]),
  (dict(data_source="web"), ["data_source='web'", "tfds"]),
  (dict(mir_candidates=500, methods="mir"), ["mir_candidates=500", "mem_size=200"]),
  (dict(validation_fraction=1.0), ["validation_fraction=1.0", "[0, 1)"]),
  (dict(eval_split="validation"), ["validation_fraction > 0"]),
  (dict(checkpoint_every_steps=150), ["checkpoint_every_steps=150", "multiple"]),
  (dict(run_batching="pmap"), ["run_batching='pmap'", "vmap"]),
  (dict(ema_decay=1.0), ["config.ema_decay", "ema_decay=1.0", "[0, 1)"]),
  (dict(ema_decay=-0.1), ["ema_decay=-0.1", "[0, 1)"]),
  (dict(sweep="ema_decay=0.9,1.5"), ["cell ema_decay=1.5", "ema_decay=1.5", "[0, 1)"]),
]


@pytest.mark.parametrize(
  "overrides,fragments",
  BAD_CONFIGS,
  ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD_CONFIGS],
)
def test_bad_config_value(overrides, fragments):
  config = base_config()
  with config.unlocked():
    config.update(overrides)
  with pytest.raises(experiment.ConfigError) as e:
    experiment.validate_config(config)
  for fragment in fragments:
    assert fragment in str(e.value), str(e.value)


# A bad value in each position of a sweep: every cell is validated, the first
# included (it once slipped through and died in the run plan with a traceback).
BETA_15 = "beta_coef=1.5 is invalid: a finite number in [0.0, 1.0]"
BAD_SWEEP_CELLS = [
  ("beta_coef=1.5,0.3,0.5", "beta_coef=1.5", BETA_15),
  ("beta_coef=0.3,1.5,0.5", "beta_coef=1.5", BETA_15),
  ("beta_coef=0.3,0.5,1.5", "beta_coef=1.5", BETA_15),
  ("iter_fgsm=0,5", "iter_fgsm=0", "iter_fgsm=0 is invalid: an int >= 1"),
  ("mixup_alpha=0,1", "mixup_alpha=0", "mixup_alpha=0.0 is invalid: a finite number > 0"),
  ("ema_decay=1.5,0.9", "ema_decay=1.5", "ema_decay=1.5 is invalid: a number in [0, 1)"),
  ("opt_lr=-1,0.1", "opt_lr=-1", "opt_lr=-1.0 is invalid: a finite number >= 0.0"),
  # Two axes: the bad value in the grid's first cell, and in its second half.
  (
    "epsilon_fgsm=-0.1,0.3;beta_coef=0.1,0.2",
    "epsilon_fgsm=-0.1,beta_coef=0.1",
    "epsilon_fgsm=-0.1 is invalid",
  ),
  ("beta_coef=0.1,1.5;epsilon_fgsm=0.1,0.2", "beta_coef=1.5,epsilon_fgsm=0.1", BETA_15),
]


@pytest.mark.parametrize("sweep,cell,fragment", BAD_SWEEP_CELLS)
def test_a_bad_sweep_value_is_refused_in_every_position(sweep, cell, fragment):
  config = base_config()
  config.sweep = sweep
  with pytest.raises(experiment.ConfigError) as e:
    experiment.validate_config(config)
  # One message naming the cell, then the key, its value and what is allowed.
  assert str(e.value).startswith(f"config.sweep cell {cell}: "), str(e.value)
  assert fragment in str(e.value), str(e.value)


def test_a_bad_first_sweep_cell_is_one_line_from_the_command_line(tmp_path):
  # The command: validation stops it before any data are loaded.
  out = train(
    "--config",
    "configs/default.py",
    "--config.sweep=beta_coef=1.5,0.3",
    "--workdir",
    str(tmp_path / "run"),
  )
  one_line_error(out, "config.sweep cell beta_coef=1.5: " + BETA_15)
  assert not (tmp_path / "run").exists()


def test_unknown_key():
  config = base_config()
  with config.unlocked():
    config.epsilon = 0.1
  with pytest.raises(experiment.ConfigError, match=r"unknown config keys \['epsilon'\]"):
    experiment.validate_config(config)


def test_wrong_type():
  config = base_config()
  with config.unlocked():
    config.ignore_type()
  config._fields["mem_size"] = "200"  # as a config file could write it
  with pytest.raises(experiment.ConfigError, match="mem_size='200' has type str, expected int"):
    experiment.validate_config(config)


def test_every_shipped_config_is_valid():
  import importlib.util

  root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
  for name in sorted(os.listdir(root)):
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(root, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    experiment.validate_config(module.get_config())


# Data: see tests/test_data.py for NaN/Inf, range, shape and label errors.


def test_empty_task_is_an_error():
  y = np.repeat(np.arange(8), 20)  # classes 8 and 9 never occur
  with pytest.raises(data.DataError, match="task 4 .* is empty"):
    data.make_streams(y, 10, 5, 0, 10, [0], False)


def test_one_class_per_task_is_documented_to_work():
  # num_tasks == num_classes: every batch holds one label; replay excludes it.
  config = base_config()
  config.update(dataset="digits", num_tasks=10, num_seeds=1, methods="er_rar", progress=False)
  experiment.validate_config(config)
  y = np.repeat(np.arange(10), 20)
  s = data.make_streams(y, 10, 10, 0, 10, [0], False)
  assert s.index.shape == (1, 10, 2, 10)


@pytest.mark.slow
def test_numerics_never_nan_with_extreme_epsilon_and_empty_buffer():
  module = rar_jax.MLP(4, hidden=(8,))
  for eps in (0.0, 1e-30, 1e6):
    cfg, chain = rar_jax.build_method(
      "er_mix_rar", num_classes=4, mem_size=10, batch_size_mem=5, exclude_current_labels=False
    )
    hyper = rar_jax.Hyper.create(opt_lr=0.1, epsilon_fgsm=eps, iter_fgsm=3)
    tx = rar_jax.make_optimizer(0.1)
    x = jnp.zeros((10, 2, 2, 1))  # constant inputs: zero attack gradients
    y = jnp.zeros(10, jnp.int32)
    state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x)
    step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
    for _ in range(3):  # empty, then a buffer of one label (no different-label neighbour)
      state, m = step(state, x, y)
    assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(state))
    assert np.isfinite(float(m["loss_replay"]))


# ---------------------------------------------------------------- first-try trust
# Each of these once ended in a traceback, a hang or a silent surprise.


def one_line_error(out, *fragments):
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr[-3000:]
  for f in fragments:
    assert f in out.stderr, out.stderr


def test_missing_config_file_is_one_line(tmp_path):
  out = train("--config", str(tmp_path / "nope.py"))
  one_line_error(out, "nope.py", "not found", "split_fashion_mnist.py")


def test_default_config_is_found_from_another_directory(tmp_path):
  # mem_size=0 stops after the config is loaded and checked: no training needed.
  out = train("--config.mem_size=0", "--workdir", str(tmp_path / "run"), cwd=tmp_path)
  one_line_error(out, "mem_size=0")


def write_idx_gz(path, array):
  header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_gz_idx_file_is_named(tmp_path, damage):
  rng = np.random.default_rng(0)
  arrays = {
    "train_x": rng.integers(0, 256, (40, 28, 28)),
    "train_y": np.arange(40) % 10,
    "test_x": rng.integers(0, 256, (20, 28, 28)),
    "test_y": np.arange(20) % 10,
  }
  for key, stem in data.IDX_FILES.items():
    write_idx_gz(tmp_path / (stem + ".gz"), arrays[key])
  path = tmp_path / (data.IDX_FILES["train_x"] + ".gz")
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x1f\x8bnot deflate")
  with pytest.raises(data.DataError) as e:
    data.load("fashion_mnist", "idx", str(tmp_path))
  assert str(path) in str(e.value) and "corrupt" in str(e.value)


def test_workdir_that_is_a_file_is_refused_before_the_data_load(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("")
  # The IDX folder is empty: a data error would mean the workdir was checked too late.
  out = train(
    "--config",
    "configs/split_fashion_mnist.py",
    "--config.data_source=idx",
    f"--config.data_dir={tmp_path}",
    "--workdir",
    str(afile),
  )
  one_line_error(out, str(afile), "is a file")


def test_unwritable_workdir_is_refused(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("")
  with pytest.raises(experiment.ConfigError, match="not writable"):
    experiment.check_workdir(str(afile / "run"))  # under a file: no directory can be made
  if os.geteuid() != 0:  # root writes into read-only directories
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(experiment.ConfigError, match="not writable"):
      experiment.check_workdir(str(locked))


@pytest.mark.slow
def test_offline_tfds_fails_fast_with_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  home = tmp_path / "home"
  home.mkdir()
  # Offline forced, whatever this machine's network: the test must never download.
  script = (
    "from rar_jax import data\n"
    "from rar_jax.data import tfds\n"
    "tfds._reachable = lambda *a, **k: False\n"
    "for name in ('mnist', 'cifar10'):\n"
    "  try:\n"
    "    data.load(name, 'tfds')\n"
    "  except data.DataError as e:\n"
    "    print(e)\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  env.update(HOME=str(home), JAX_PLATFORMS="cpu")
  try:
    out = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
  except subprocess.TimeoutExpired:
    pytest.fail("TFDS without data and without network did not fail within 60 s")
  lines = out.stdout.splitlines()
  assert len(lines) == 2, out.stdout + out.stderr
  for name, line in zip(("mnist", "cifar10"), lines):
    assert f"`tfds build {name} --data_dir=DIR`" in line and "--config.data_dir=DIR" in line
    assert str(home / "tensorflow_datasets") in line
  assert out.stderr == ""  # no TensorFlow or TFDS log noise
  assert not (home / "tensorflow_datasets").exists()
