"""Models by import path on the command line (``--config.model=package.module:name``
with ``--config.model_kwargs``): a run from a user's folder against the built-in
model with the same weights, and one line for every model the run cannot use."""

import functools
import json
import os

import flax.linen as nn
import numpy as np
import pytest
from cli import train

import rar_jax
import rar_jax.nnx_models
from rar_jax.errors import ConfigError
from rar_jax.runner import data_check, user_model
from rar_jax.runner.config import base_config
from rar_jax.runner.validate import validate_config

# rar_jax.MLP in NNX, its weights drawn exactly as the Linen MLP draws them from
# the key the run gives the model: the run's numbers must then be the built-in's.
TWIN = """
import jax
import jax.numpy as jnp
from flax import nnx

import rar_jax


class Twin(nnx.Module):
  def __init__(self, num_classes, hidden=(400, 400), in_features=64, *, rngs):
    key = jax.random.key_data(rngs.default.key[...])
    p = rar_jax.MLP(num_classes, hidden).init(key, jnp.zeros((1, in_features)))["params"]
    widths = (in_features, *hidden)
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, hidden)])
    self.head = nnx.Linear(hidden[-1], num_classes, rngs=rngs)
    for layer, name in [*zip(self.layers, [f"dense{i}" for i in range(len(hidden))]),
                        (self.head, "head")]:
      layer.kernel.set_value(p[name]["kernel"])
      layer.bias.set_value(p[name]["bias"])

  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      h = nnx.relu(layer(h))
    self.sow(nnx.Intermediate, "penultimate", h)
    return self.head(h)
"""

CONFIG = """
from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "digits"
  c.num_tasks = 5
  c.methods = "er_rar"
  c.num_seeds = 2
  c.mem_size = 50
  c.model = "twin:Twin"
  c.model_kwargs = {"hidden": [32]}
  c.progress = False
  c.plot = False
  return c
"""


def _final(workdir):
  with open(os.path.join(workdir, "metrics.json")) as f:
    return np.array(json.load(f)["acc_matrix"])


def test_an_nnx_model_by_import_path_runs_as_the_builtin_with_the_same_weights(tmp_path):
  (tmp_path / "twin.py").write_text(TWIN)
  (tmp_path / "config.py").write_text(CONFIG)
  nnx_run = train("--config", "config.py", "--workdir", "runs/nnx", cwd=tmp_path)
  assert nnx_run.returncode == 0, nnx_run.stderr[-2000:]
  linen_run = train(
    "--config",
    "config.py",
    "--workdir",
    "runs/linen",
    "--config.model=mlp",
    "--config.model_kwargs={'hidden': (32,)}",
    cwd=tmp_path,
  )
  assert linen_run.returncode == 0, linen_run.stderr[-2000:]
  for run in ("nnx", "linen"):  # no convolution: the stream compiles whole, as the MLP's
    with open(tmp_path / "runs" / run / "metrics.json") as f:
      metrics = json.load(f)
    assert (metrics["stream_loop"], metrics["eval_loop"]) == ("scan", "map")
  nnx_acc, linen_acc = _final(tmp_path / "runs/nnx"), _final(tmp_path / "runs/linen")
  assert nnx_acc.shape == (2, 5, 5) and linen_acc[:, -1].mean() > 0.5
  # Same weights, same stream: equal up to a test row flipped by float rounding.
  np.testing.assert_allclose(nnx_acc, linen_acc, atol=0.03)


def test_a_bad_model_is_one_error_line_from_train_py(tmp_path):
  (tmp_path / "config.py").write_text(CONFIG)
  out = train("--config", "config.py", "--workdir", "runs", cwd=tmp_path)  # no twin.py here
  assert out.returncode == 2
  (line,) = out.stderr.strip().splitlines()
  assert line.startswith("error: config.model='twin:Twin': cannot import 'twin'"), line


BAD = """
import math

import flax.linen as nn
from flax import nnx


class ThreeOut(nnx.Module):
  def __init__(self, *, rngs):
    self.head = nnx.Linear(64, 3, rngs=rngs)

  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    self.sow(nnx.Intermediate, "penultimate", h)
    return self.head(h)


class NoSow(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class Scalar(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    self.sow("features", "penultimate", x)
    return x.sum()


class WrongInput(nnx.Module):
  def __init__(self, num_classes, *, rngs):
    self.head = nnx.Linear(100, num_classes, rngs=rngs)

  def __call__(self, x):
    self.sow(nnx.Intermediate, "penultimate", x)
    return self.head(x.reshape(x.shape[0], -1))


def not_a_factory():
  return 3


pi = math.pi
"""


@pytest.mark.parametrize(
  "model, kwargs, message",
  [
    ("no_such:Net", {}, r"config.model='no_such:Net': cannot import 'no_such'"),
    ("bad_models:Missing", {}, r"config.model='bad_models:Missing': bad_models has no 'Missing'"),
    ("bad_models", {}, r"config.model='bad_models' is invalid: one of .* or an import path"),
    ("bad_models:pi", {}, r"config.model='bad_models:pi' is a float, not a flax.linen module"),
    ("bad_models:not_a_factory", {}, r"returned a int, not a flax.linen module"),
    ("bad_models:ThreeOut", {}, r"returns \(1, 3\) for one input of shape \(8, 8, 1\)"),
    ("bad_models:Scalar", {}, r"config.model='bad_models:Scalar' returns \(\) for one input"),
    ("bad_models:NoSow", {}, r"does not sow config.feature_layer='penultimate'; it sows \(\)"),
    ("bad_models:WrongInput", {}, r"cannot take inputs of shape \(8, 8, 1\): TypeError"),
    ("bad_models:NoSow", {"depth": 3}, r"config.model='bad_models:NoSow' cannot be built with"),
    ("mlp", {"depth": 3}, r"config.model_kwargs=\{'depth': 3\} is invalid for model 'mlp'"),
  ],
)
def test_every_bad_model_is_one_line_naming_config_model(
  tmp_path, monkeypatch, model, kwargs, message
):
  (tmp_path / "bad_models.py").write_text(BAD)
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = base_config()
  config.update(dataset="digits", num_tasks=5, model=model, model_kwargs=kwargs)
  with pytest.raises(ConfigError, match=message) as e:
    validate_config(config)
  assert "\n" not in str(e.value)


def test_custom_data_checks_the_model_on_the_datas_own_shape(tmp_path, monkeypatch):
  # 3 classes of 6x6 grey images: the model is checked once their shape is known.
  rng = np.random.default_rng(0)
  x, y = rng.uniform(size=(60, 6, 6, 1)).astype(np.float32), np.repeat(np.arange(3), 20)
  np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
  (tmp_path / "bad_models.py").write_text(BAD)
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = base_config()
  config.update(dataset="custom", data_dir=str(tmp_path / "d.npz"), num_tasks=3)
  config.update(model="bad_models:WrongInput")
  validate_config(config)  # the stand-in shape says nothing yet
  with pytest.raises(ConfigError, match=r"cannot take inputs of shape \(6, 6, 1\)"):
    data_check.validate_data(config)


def test_num_classes_is_passed_where_the_factory_takes_it():
  class Takes:
    def __init__(self, num_classes, *, rngs):
      pass

  def linen_factory(width):
    import flax.linen as nn

    return nn.Dense(width)

  made = user_model.build(Takes, {}, 7, "config.model")
  assert made.keywords == {"num_classes": 7}
  assert user_model.build(linen_factory, {"width": 5}, 7, "config.model").features == 5


def test_the_own_model_page_cli_example_runs_as_written(tmp_path):
  """docs/own_model.md's small_cnn.py and config.py, written to a folder and run from it."""
  with open(os.path.join(os.path.dirname(__file__), "..", "docs", "own_model.md")) as f:
    page = f.read()
  for name in ("small_cnn.py", "config.py"):
    start = page.index(f"```python\n# {name}\n") + len("```python\n")
    (tmp_path / name).write_text(page[start : page.index("```", start)])
  out = train("--config", "config.py", "--workdir", "runs", "--config.num_seeds=1", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  for method in ("er", "er_rar"):
    with open(tmp_path / "runs" / method / "metrics.json") as f:
      metrics = json.load(f)
    assert metrics["final_avg_accuracy"]["mean"] > 0.5  # chance: 0.1
    # 4.6k multiply-adds of convolution per row: cheaper in one program than a call per step.
    assert (metrics["stream_loop"], metrics["eval_loop"], metrics["unroll"]) == ("scan", "map", 0)
  # 8x as wide, 37k: a conv net, run as the built-in ResNet is on the CPU (XLA's convolutions run
  # ~10x slower inside a loop's body): steps and evaluation called from the host, attack unrolled.
  flags = ("--config.num_seeds=1", "--config.methods=er_rar", "--config.model_kwargs={'width': 64}")
  out = train("--config", "config.py", "--workdir", "wide", *flags, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(tmp_path / "wide" / "metrics.json") as f:
    metrics = json.load(f)
  assert (metrics["stream_loop"], metrics["eval_loop"], metrics["unroll"]) == ("host", "host", 5)


class _Remat(nn.Module):
  """A convolution inside a nested program (rematerialised)."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.remat(nn.Conv)(4, (3, 3))(x).reshape(x.shape[0], -1)
    self.sow("features", "penultimate", h)
    return nn.Dense(3)(h)


class _Block(nn.Module):
  @nn.compact
  def __call__(self, h, _):
    return nn.Conv(4, (3, 3))(h), None


class _Scanned(nn.Module):
  """A stem and four blocks in a scan (one body in the trace, run four times)."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Conv(4, (3, 3))(x)
    blocks = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=4)
    h = blocks()(h, None)[0].reshape(x.shape[0], -1)
    self.sow("features", "penultimate", h)
    return nn.Dense(3)(h)


class _Transposed(nn.Module):
  """A stride-2 transposed convolution: its dilated input's zeros are no work."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.ConvTranspose(4, (3, 3), strides=(2, 2))(x).reshape(x.shape[0], -1)
    self.sow("features", "penultimate", h)
    return nn.Dense(3)(h)


def _resnet_macs(side, c, nf=20):
  """The reduced ResNet-18's multiply-adds per row, by hand: 3x3 stem, then per stage
  (side halving after the first) 4 3x3 convolutions and, after the first, a 1x1 shortcut."""
  total = side * side * nf * 9 * c
  cin = nf
  for stage in range(4):
    width, side = nf * 2**stage, side if stage == 0 else (side + 1) // 2
    total += side * side * width * 9 * (cin + 3 * width)
    total += side * side * width * cin if stage else 0
    cin = width
  return total


@pytest.mark.parametrize(
  "make, macs",
  [
    (lambda: rar_jax.create_model("resnet18_reduced", 3, "xla"), _resnet_macs(32, 1)),
    (lambda: rar_jax.create_model("resnet18_reduced", 3, "im2col"), 0),  # matmuls only
    (lambda: rar_jax.create_model("mlp", 3), 0),
    (
      lambda: functools.partial(rar_jax.nnx_models.ReducedResNet18, 3, in_channels=1),
      _resnet_macs(32, 1),
    ),
    (lambda: functools.partial(rar_jax.nnx_models.MLP, 3, in_features=32 * 32), 0),
    (_Remat, 32 * 32 * 4 * 9),
    (_Scanned, 32 * 32 * 4 * 9 * (1 + 4 * 4)),
    (_Transposed, 32 * 32 * 9 * 4),  # each input pixel meets the 3x3x4 kernel once
  ],
)
def test_conv_macs_counts_the_convolutions_wherever_the_model_runs_them(make, macs):
  assert user_model.conv_macs(make(), (32, 32, 1)) == macs
  assert user_model.is_conv_model(make(), (32, 32, 1)) is (macs >= 32_768)


def test_im2col_with_a_model_by_import_path_is_one_error_line():
  config = base_config()
  config.update(dataset="digits", model="small_cnn:SmallCNN", conv_impl="im2col")
  with pytest.raises(ConfigError, match=r"^config.conv_impl='im2col' applies to the built-in"):
    validate_config(config)
