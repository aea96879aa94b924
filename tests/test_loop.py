"""Execution strategies: how a chunk's steps run (`stream_loop`) and how conv
nets convolve (`conv_impl`). Strategies must not change the numbers."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rar_jax
from rar_jax import models
from rar_jax.runner import loop

NUM_CLASSES = 4
HYPER = dict(opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.1, alpha_fgsm=0.05, iter_fgsm=2)


def stream(shape, n=60, seed=0):
  """Two tasks (classes 0,1 then 2,3) of random images; index[runs, steps, 10]."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(n, *shape)), jnp.float32)
  y = jnp.asarray(np.concatenate([np.tile([0, 1], n // 4), np.tile([2, 3], n // 4)]), jnp.int32)
  return x, y


def parts(module, method):
  cfg, chain = rar_jax.build_method(
    method, num_classes=NUM_CLASSES, mem_size=20, batch_size_mem=5, mir_candidates=10
  )
  return cfg, chain, rar_jax.make_optimizer(0.1), rar_jax.Hyper.create(**HYPER)


def assert_bitwise_equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def assert_same_runs(out):
  (scan_s, scan_m), (host_s, host_m) = out["scan"], out["host"]
  assert_bitwise_equal(scan_s, host_s)  # the state decides every reported number
  # A loss metric is a reduction XLA may fuse differently inside the loop (1 ulp).
  for k in scan_m:
    np.testing.assert_allclose(np.asarray(host_m[k]), np.asarray(scan_m[k]), rtol=1e-6)
  return scan_s, host_s


def run_both(module, method, batching, shape, seeds=(3, 4)):
  x, y = stream(shape)
  cfg, chain, tx, hyper = parts(module, method)
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  steps = len(y) // 10
  index = np.stack([np.arange(len(y)).reshape(steps, 10) for _ in seeds])
  states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys(seeds), x[:10])
  out = {}
  for name in loop.STREAM_LOOPS:
    runner = loop.make_stream_runner(step, batching, name)
    compiled = runner.lower(states, x, y, jnp.asarray(index)).compile()
    out[name] = compiled(states, x, y, jnp.asarray(index))
  return states, out


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_host_loop_equals_scan_bit_for_bit_mlp(batching):
  module = rar_jax.MLP(NUM_CLASSES, hidden=(16, 16))
  method = "mir_mix_rar" if batching == "map" else "er_rar"  # the default pairing covers most
  states, out = run_both(module, method, batching, (4, 4, 1))
  scan_s, host_s = assert_same_runs(out)
  assert out["host"][1]["loss_current"].shape == (2, 6)
  # The caller's states survive the host loop's donation, and training moved them.
  assert not np.array_equal(
    np.asarray(states.params["head"]["kernel"]), np.asarray(host_s.params["head"]["kernel"])
  )
  assert int(host_s.buffer.size[0]) == 20


@pytest.mark.slow
def test_host_loop_equals_scan_bit_for_bit_resnet_im2col():
  module = rar_jax.ReducedResNet18(NUM_CLASSES, nf=2, blocks=(1,), conv_impl="im2col")
  _, out = run_both(module, "er", "map", (6, 6, 3), seeds=(0,))
  assert_same_runs(out)


@pytest.mark.parametrize(
  "side,cin,cout,kernel,stride,padding",
  [(8, 3, 5, 3, 1, 1), (9, 4, 6, 3, 2, 1), (8, 4, 6, 1, 2, 0), (7, 2, 3, 3, 1, "SAME")],
)
def test_im2col_conv_equals_xla_conv(side, cin, cout, kernel, stride, padding):
  rng = np.random.default_rng(side + cin)
  x = jnp.asarray(rng.normal(size=(2, side, side, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32)
  pads = padding if isinstance(padding, str) else [(padding, padding)] * 2
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  want = lax.conv_general_dilated(
    x, w, (stride, stride), pads, dimension_numbers=dn, precision="highest"
  )
  got = models.im2col_conv(x, w, (stride, stride), pads, dimension_numbers=dn, precision="highest")
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
  # And its gradients (the step differentiates through it).
  f = lambda fn: jax.grad(
    lambda a, b: jnp.sum(
      jnp.sin(fn(a, b, (stride, stride), pads, dimension_numbers=dn, precision="highest"))
    ),
    (0, 1),
  )
  for g1, g2 in zip(f(models.im2col_conv)(x, w), f(lax.conv_general_dilated)(x, w)):
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_resnet_conv_impls_share_parameters_and_agree():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 12, 12, 3)), jnp.float32)
  xla = rar_jax.ReducedResNet18(10, nf=4, blocks=(1, 1), conv_impl="xla")
  im2col = rar_jax.ReducedResNet18(10, nf=4, blocks=(1, 1), conv_impl="im2col")
  variables = jax.jit(xla.init)(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(
    jax.eval_shape(im2col.init, jax.random.PRNGKey(0), x)
  )
  a = jax.jit(xla.apply)(variables, x)
  b = jax.jit(im2col.apply)(variables, x)
  assert a.shape == (3, 10)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
  "shape,ok",
  [
    ((28, 28, 1), True),
    ((32, 32, 3), True),
    ((25, 25, 1), True),
    ((24, 24, 1), False),
    ((8, 8, 1), False),
    ((784,), False),
  ],
)
def test_resnet_input_shape_check(shape, ok):
  module = models.create_model("resnet18_reduced", 10)
  if ok:
    models.check_input_shape("resnet18_reduced", module, shape)
    out = jax.eval_shape(
      lambda: module.apply(
        module.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))), jnp.zeros((2, *shape))
      )
    )
    assert out.shape == (2, 10)
  else:
    with pytest.raises(ValueError, match=r"resnet18_reduced .*\(H, W, C\) with H, W >= 25"):
      models.check_input_shape("resnet18_reduced", module, shape)


def test_defaults_per_platform():
  # CPU: XLA's convolutions (host loop, inner loops unrolled) for runs one at
  # a time in one process, RAR's attack included; im2col otherwise.
  assert loop.default_conv_impl("cpu", 1) == "xla"
  assert loop.default_conv_impl("cpu", 1, processes=2) == "im2col"
  assert loop.default_conv_impl("cpu", 4, batching="map") == "xla"
  assert loop.default_conv_impl("cpu", 4, batching="vmap") == "im2col"
  assert loop.default_stream_loop("cpu", True, "xla", processes=2) == "scan"
  assert loop.default_unroll("cpu", True, "xla")
  assert not loop.default_unroll("cpu", True, "im2col")
  assert not loop.default_unroll("cpu", False, "xla")  # the MLP keeps its loops
  assert not loop.default_unroll("gpu", True, "xla")
  # Evaluation: a host loop over runs and chunks with XLA's convolutions on
  # one CPU device; in one program (im2col on the CPU) over several devices.
  # Eigen's convolutions for XLA's on 84x84 images on the CPU, whatever training chose.
  default = {"cpu_conv_library": "default"}
  assert loop.eval_execution("cpu", "im2col") == {
    "conv_impl": "xla",
    "eval_loop": "host",
    **default,
  }
  assert loop.eval_execution("cpu", "xla", 2) == {
    "conv_impl": "im2col",
    "eval_loop": "map",
    **default,
  }
  assert loop.eval_execution("gpu", "im2col", 1) == {
    "conv_impl": "im2col",
    "eval_loop": "map",
    **default,
  }
  assert loop.eval_execution("cpu", "im2col", 1, (84, 84, 3))["cpu_conv_library"] == "eigen"
  assert loop.eval_execution("cpu", "im2col", 1, (32, 32, 3))["cpu_conv_library"] == "default"
  assert loop.eval_execution("cpu", "xla", 2, (84, 84, 3))["cpu_conv_library"] == "default"
  assert loop.eval_execution("gpu", "xla", 1, (84, 84, 3))["cpu_conv_library"] == "default"
  # A model by import path keeps its XLA convolutions where im2col would be picked (and with
  # them Eigen's on large images, by the rule above).
  own = functools.partial(loop.eval_execution, own_convolutions=True)
  assert own("cpu", "xla", 2, (32, 32, 3)) == {"conv_impl": "xla", "eval_loop": "map", **default}
  assert own("cpu", "xla", 2, (84, 84, 3))["cpu_conv_library"] == "eigen"
  assert own("cpu", "xla", 1, (84, 84, 3))["eval_loop"] == "host"
  assert loop.default_conv_impl("gpu", 1) == "xla"
  assert loop.default_conv_impl("gpu", 16) == "im2col"
  assert loop.default_conv_impl("tpu", 16) == "xla"
  assert loop.default_stream_loop("cpu", True, "xla") == "host"
  assert loop.default_stream_loop("cpu", True, "im2col") == "scan"
  assert loop.default_stream_loop("cpu", False, "xla") == "scan"
  assert loop.default_stream_loop("gpu", True, "xla") == "scan"


@pytest.mark.parametrize(
  "method,overrides,unroll",
  [
    ("er", {}, 0),
    ("mir", {}, 0),
    ("er_rar", {"iter_fgsm": 2}, 2),
    ("er_mix_rar", {"iter_fgsm": 5}, 5),
    ("er_rar", {"iter_fgsm": 2, "sweep": "iter_fgsm=3,7"}, 7),  # the sweep's longest
    ("er", {"replay_iters": 3}, 3),
    ("er_rar", {"iter_fgsm": 2, "replay_iters": 3}, 3),
  ],
)
def test_plan_picks_the_execution_on_the_cpu(method, overrides, unroll):
  from rar_jax import data as data_lib
  from rar_jax.runner import config as config_lib
  from rar_jax.runner import plan as plan_lib

  config = config_lib.base_config()
  config.update(model="resnet18_reduced", methods=method, num_seeds=1, **overrides)
  streams = data_lib.Streams(np.zeros((1, 1, 1, 10), np.int32), np.zeros((1, 10), np.int32), 0)
  plan = plan_lib.make_plan(config, method, streams, 10, 1)
  assert plan.execution == {
    "conv_impl": "xla",
    "stream_loop": "host",
    "unroll": unroll,
    "cpu_conv_library": "default",
  }
  # Explicit keys win over the rule; im2col keeps the loops.
  config.update(conv_impl="im2col", stream_loop="host")
  plan = plan_lib.make_plan(config, method, streams, 10, 1)
  assert plan.execution == {
    "conv_impl": "im2col",
    "stream_loop": "host",
    "unroll": 0,
    "cpu_conv_library": "default",
  }
  # The MLP has no convolutions to keep out of loops.
  config.update(model="mlp", conv_impl="auto", stream_loop="auto")
  plan = plan_lib.make_plan(config, method, streams, 10, 1)
  assert plan.execution == {
    "conv_impl": "xla",
    "stream_loop": "scan",
    "unroll": 0,
    "cpu_conv_library": "default",
  }


@pytest.mark.parametrize("method,replay_iters", [("mir_mix_rar", 1), ("er_rar", 2)])
@pytest.mark.slow
def test_unrolled_inner_loops_give_the_same_runs(method, replay_iters):
  # `unroll` changes how the step compiles, not what it computes.
  module = rar_jax.MLP(NUM_CLASSES, hidden=(16, 16))
  x, y = stream((4, 4, 1))
  cfg, chain, tx, hyper = parts(module, method)
  index = jnp.asarray(np.arange(len(y)).reshape(1, -1, 10))
  out = []
  for unroll in (0, 2):
    c = dataclasses.replace(cfg, replay_iters=replay_iters)
    states = loop.init_states(module, tx, c, hyper, loop.seed_keys([5]), x[:10])
    step = rar_jax.make_train_step(module, tx, c, chain, unroll=unroll)
    runner = loop.make_stream_runner(step, "map", "host")
    out.append(runner(states, x, y, index)[0])
  for u, v in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("batch_norm_rows", ["group", "joint"])
def test_resnet_rar_on_the_cpu_default_matches_the_im2col_scan_execution(batch_norm_rows):
  # The CPU default for RAR on conv nets (XLA's convolutions, host loop, attack
  # unrolled) against the im2col (im2col, scan, attack in a loop): the same
  # training, to float tolerance, over a few steps of a small ResNet.
  x, y = stream((8, 8, 1), n=40)
  index = jnp.asarray(np.arange(len(y)).reshape(1, -1, 10))
  finals = []
  for conv_impl, stream_loop, unroll in (("xla", "host", 2), ("im2col", "scan", 0)):
    module = rar_jax.ReducedResNet18(NUM_CLASSES, nf=4, blocks=(1, 1), conv_impl=conv_impl)
    cfg, chain, tx, hyper = parts(module, "er_rar")
    cfg = dataclasses.replace(cfg, batch_norm_rows=batch_norm_rows)
    states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([1]), x[:10])
    step = rar_jax.make_train_step(module, tx, cfg, chain, unroll=unroll)
    runner = loop.make_stream_runner(step, "map", stream_loop)
    finals.append(runner(states, x, y, index)[0])
  moved = jax.tree.leaves(finals[0].params)[0]
  for u, v in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)
  assert int(finals[0].buffer.size[0]) == 20 and np.all(np.isfinite(np.asarray(moved)))


def test_a_resume_keeps_the_convolutions_its_checkpoints_were_written_with(tmp_path):
  import json

  from rar_jax import data as data_lib
  from rar_jax.errors import ConfigError
  from rar_jax.runner import config as config_lib
  from rar_jax.runner import plan as plan_lib
  from rar_jax.runner import workdir

  config = config_lib.base_config()
  config.update(model="resnet18_reduced", methods="er", num_seeds=1)
  streams = data_lib.Streams(np.zeros((1, 1, 1, 10), np.int32), np.zeros((1, 10), np.int32), 0)
  plan = plan_lib.make_plan(config, "er", streams, 10, 1)
  assert plan.execution["conv_impl"] == "xla"  # ER on the CPU today
  # Checkpoints written when auto meant im2col for ER (early versions).
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "placement.json").write_text(
    json.dumps({"padded_runs": 1, "devices": 1, "conv_impl": "im2col"})
  )
  resumed = workdir.check_placement(str(tmp_path), config, plan, 1, True)
  assert resumed.execution == {
    "conv_impl": "im2col",
    "stream_loop": "scan",
    "unroll": 0,
    "cpu_conv_library": "default",
  }
  assert json.loads((tmp_path / "placement.json").read_text())["conv_impl"] == "im2col"
  config.update(conv_impl="xla")  # asked for explicitly: refused, not silently changed
  with pytest.raises(ConfigError, match="conv_impl='im2col'.*--config.conv_impl=im2col"):
    workdir.check_placement(str(tmp_path), config, plan, 1, True)


def test_unknown_stream_loop_and_conv_impl_are_rejected():
  with pytest.raises(ValueError, match="stream_loop='while'"):
    loop.make_stream_runner(lambda s, x, y: (s, {}), "map", "while")
  with pytest.raises(ValueError, match="conv_impl='fft'"):
    rar_jax.ReducedResNet18(4, conv_impl="fft").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))


def test_config_with_a_model_that_cannot_take_the_images_fails_before_any_work():
  from rar_jax.runner import experiment
  from rar_jax.runner.config import base_config

  config = base_config()
  config.update(dataset="digits", data_source="embedded", model="resnet18_reduced")
  with pytest.raises(
    experiment.ConfigError, match=r"resnet18_reduced.*digits.*\(8, 8, 1\).*H, W >= 25"
  ):
    experiment.validate_config(config)


@pytest.mark.parametrize("key,value", [("stream_loop", "while"), ("conv_impl", "fft")])
def test_config_rejects_unknown_execution_choices(key, value):
  from rar_jax.runner import experiment
  from rar_jax.runner.config import base_config

  config = base_config()
  config[key] = value
  with pytest.raises(experiment.ConfigError, match=f"config.{key}='{value}' is invalid"):
    experiment.validate_config(config)


@pytest.mark.parametrize(
  "batching,stream_loop", [("map", "host"), ("vmap", "host"), ("map", "scan")]
)
def test_donated_states_train_the_same_runs_and_are_given_up(batching, stream_loop):
  # donate_states (the runner's caller replaces its states by the result): the same
  # numbers bit for bit; the caller's arrays are gone, without it they survive.
  module = rar_jax.MLP(NUM_CLASSES, hidden=(16, 16))
  x, y = stream((4, 4, 1))
  cfg, chain, tx, hyper = parts(module, "er")
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  index = jnp.asarray(np.stack([np.arange(len(y)).reshape(-1, 10)] * 3))
  finals, given = [], []
  for donate in (False, True):
    states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([1, 2, 3]), x[:10])
    runner = loop.make_stream_runner(step, batching, stream_loop, donate_states=donate)
    finals.append(runner(states, x, y, index)[0])
    given.append(all(leaf.is_deleted() for leaf in jax.tree.leaves(states.params)))
  assert given == [False, True]
  assert_bitwise_equal(finals[0], finals[1])
  # Every run trained on its own slot (the in-place writes put run r back at r).
  kernels = np.asarray(finals[1].params["head"]["kernel"])
  assert not np.array_equal(kernels[0], kernels[1]) and int(finals[1].buffer.size[2]) == 20


def test_donate_states_is_a_bool_in_one_line():
  with pytest.raises(rar_jax.errors.ArgumentError, match=r"^donate_states='yes' is invalid: True"):
    loop.make_stream_runner(lambda s, x, y: (s, {}), "map", "host", donate_states="yes")
