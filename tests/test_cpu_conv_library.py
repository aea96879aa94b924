"""The library behind XLA's CPU convolutions (`cpu_conv_library`): what the
option changes in the compiled program, when "auto" picks it, that it trains
the same runs to float tolerance, and that a resume keeps it."""

import dataclasses
import json
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rar_jax
from rar_jax.errors import ArgumentError, ConfigError
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import cpu_conv, engine, loop

CPU = jax.devices()[0].platform == "cpu"


def _ynn_fused_ops(options):
  """The kinds of op (convolution, reduce, dot) XLA hands to YNNPACK in a
  program holding one of each."""

  def f(x, w, m):
    dn = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
    return (h.reshape(-1, 20) @ m).sum(0) * h.sum(axis=(0, 1, 2))

  # 20 channels, as the reduced ResNet-18's first stage: XLA leaves some narrower
  # convolutions out of YNNPACK.
  args = (jnp.ones((2, 8, 8, 20)), jnp.ones((3, 3, 20, 20)), jnp.ones((20, 20)))
  return _ynn_kinds(jax.jit(f).lower(*args).compile(compiler_options=options).as_text())


def _ynn_kinds(text):
  """The kinds of op in a compiled program's text that run in YNNPACK fusions."""
  return {op for op, n in _ynn_counts(text).items() if n}


def _ynn_counts(text):
  """How many ops of each kind a compiled program's text runs in YNNPACK fusions."""
  fused = set(re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", text))
  counts, computation = dict.fromkeys(("convolution", "reduce", "dot"), 0), None
  for line in text.splitlines():
    if line and not line.startswith(" "):
      computation = line.split()[0].lstrip("%")
    for op in counts:
      if f" {op}(" in line and computation in fused:
        counts[op] += 1
  return counts


def _small_resnet(method, rows, seeds, seed):
  """Images, labels, a 20-channel ResNet (see `_ynn_fused_ops`) and its runs' states."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(rows, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(np.tile(np.arange(4), rows // 4), jnp.int32)
  module = rar_jax.ReducedResNet18(4, nf=20, blocks=(1, 1))
  cfg, chain = rar_jax.build_method(method, num_classes=4, mem_size=20, batch_size_mem=10)
  tx = rar_jax.make_optimizer(0.1)
  states = loop.init_states(module, tx, cfg, chain.hyper(0.1), loop.seed_keys(seeds), x[:10])
  return x, y, module, cfg, chain, tx, states


@pytest.mark.skipif(not CPU, reason="an XLA:CPU option")
def test_eigen_moves_only_the_convolutions_off_ynnpack():
  default = _ynn_fused_ops(None)
  eigen = _ynn_fused_ops(cpu_conv.compiler_options("eigen"))
  if "convolution" not in default:
    pytest.skip("this jaxlib does not run convolutions on YNNPACK")
  # A jaxlib whose default set of YNNPACK fusions changed fails here: the
  # option spells that set out (rar_jax.runner.cpu_conv._EIGEN_CONVOLUTIONS).
  assert eigen == default - {"convolution"}


def test_compiler_options():
  assert cpu_conv.compiler_options("default") is None
  with pytest.raises(ArgumentError, match="cpu_conv_library='mkl' is invalid"):
    cpu_conv.compiler_options("mkl")


@pytest.mark.parametrize(
  "platform,conv_model,conv_impl,shape,expected",
  [
    ("cpu", True, "xla", (84, 84, 3), "eigen"),  # mini-ImageNet
    ("cpu", True, "xla", (64, 64, 3), "eigen"),
    ("cpu", True, "xla", (63, 84, 3), "default"),  # the shorter side decides
    ("cpu", True, "xla", (32, 32, 3), "default"),  # CIFAR: every earlier number kept
    ("cpu", True, "im2col", (84, 84, 3), "default"),  # matmuls, no convolutions
    ("cpu", False, "xla", (84, 84, 3), "default"),  # the MLP
    ("gpu", True, "xla", (84, 84, 3), "default"),
    ("cpu", True, "xla", None, "default"),  # shape unknown (a plan built without data)
  ],
)
def test_auto_picks_eigen_for_large_images_on_the_cpu(
  platform, conv_model, conv_impl, shape, expected
):
  assert cpu_conv.default_cpu_conv_library(platform, conv_model, conv_impl, shape) == expected


@pytest.mark.skipif(not CPU, reason="an XLA:CPU option")
def test_eigen_trains_the_same_runs_to_float_tolerance():
  index = jnp.asarray(np.arange(40).reshape(1, -1, 10))
  finals, compiled = [], []
  for library in ("default", "eigen"):
    x, y, module, cfg, chain, tx, states = _small_resnet("er_rar", 40, [3], 0)
    step = rar_jax.make_train_step(module, tx, cfg, chain, unroll=2)
    runner = loop.make_stream_runner(step, "map", "host", cpu_conv_library=library)
    finals.append(runner(states, x, y, index)[0])
    compiled.append(runner._jitted.lower(jax.tree.map(lambda a: a[0], states), x, y, index[0, 0]))
  texts = [c.compile().as_text() for c in compiled]
  # The option reached the training program (ahead-of-time compilation included).
  assert ["__ynn_fusion" in t and " convolution(" in t for t in texts] == [True, True]
  assert texts[0] != texts[1]
  moved = np.abs(np.asarray(jax.tree.leaves(finals[1].params)[0])).sum()
  assert np.isfinite(moved) and moved > 0
  for u, v in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)


def test_a_resume_keeps_the_cpu_conv_library_of_its_checkpoints(tmp_path):
  from rar_jax import data as data_lib
  from rar_jax.runner import config as config_lib
  from rar_jax.runner import plan as plan_lib
  from rar_jax.runner import workdir

  config = config_lib.base_config()
  config.update(model="resnet18_reduced", methods="er", num_seeds=1)
  streams = data_lib.Streams(np.zeros((1, 1, 1, 10), np.int32), np.zeros((1, 10), np.int32), 0)
  plan = plan_lib.make_plan(config, "er", streams, 10, 1, input_shape=(84, 84, 3))
  expected = "eigen" if CPU else "default"
  assert plan.execution["cpu_conv_library"] == expected
  (tmp_path / "checkpoints").mkdir()
  # A placement file from before the key: its checkpoints ran XLA's default.
  placement = tmp_path / "placement.json"
  placement.write_text(json.dumps({"padded_runs": 1, "devices": 1, "conv_impl": "xla"}))
  resumed = workdir.check_placement(str(tmp_path), config, plan, 1, True)
  assert resumed.execution["cpu_conv_library"] == "default"
  assert json.loads(placement.read_text())["cpu_conv_library"] == "default"
  # Asked for explicitly: refused, not silently changed.
  config.update(cpu_conv_library="eigen")
  eigen_plan = dataclasses.replace(plan).with_execution(config, 1)
  with pytest.raises(ConfigError, match="cpu_conv_library='default'.*cpu_conv_library=default"):
    workdir.check_placement(str(tmp_path), config, eigen_plan, 1, True)
  # A fresh workdir records the choice.
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  workdir.check_placement(str(fresh), config, eigen_plan, 1, True)
  assert json.loads((fresh / "placement.json").read_text())["cpu_conv_library"] == "eigen"


@pytest.mark.parametrize("key", ["cpu_conv_library", "batching", "stream_loop"])
def test_run_stream_names_an_unhashable_setting_in_one_line(key):
  module = rar_jax.MLP(4, hidden=(8,))
  cfg, chain = rar_jax.build_method("er", num_classes=4, mem_size=20, batch_size_mem=10)
  tx = rar_jax.make_optimizer(0.1)
  x = np.random.default_rng(0).random((20, 4, 4, 1)).astype(np.float32)
  y = np.tile(np.arange(4), 5)
  states = rar_jax.init_states(module, tx, cfg, chain, [0], x[:1])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  index = np.arange(20).reshape(1, 2, 10)
  with pytest.raises(ArgumentError, match=rf"^{key}=\['eigen'\] is invalid: one of"):
    rar_jax.run_stream(step, states, x, y, index, **{key: ["eigen"]})


@pytest.mark.skipif(not CPU, reason="an XLA:CPU option")
@pytest.mark.parametrize(
  "eval_loop,eval_classifier", [("host", "head"), ("host", "ncm"), ("map", "head")]
)
def test_evaluation_compiles_with_the_options_it_is_given(eval_loop, eval_classifier):
  # What the runner passes for 84x84 images (loop.eval_execution): every convolution of
  # the model's programs on Eigen, and the accuracies of XLA's default.
  x, y, module, _, _, _, states = _small_resnet("er", 24, [0, 1], 1)
  task_of_class = jnp.asarray([[0, 0, 1, 1]] * 2)
  accuracies, in_ynnpack = [], []
  for library in ("default", "eigen"):
    evaluate = evaluator_lib.make_evaluator(
      module,
      2,
      chunk=8,
      eval_loop=eval_loop,
      eval_classifier=eval_classifier,
      compiler_options=cpu_conv.compiler_options(library, forward_only=True),
    )
    compiled = evaluate.lower(states, x, y, task_of_class).compile()
    accuracies.append(np.asarray(compiled(states, x, y, task_of_class)))
    # Every program that applies the model: the host loop's chunk and (NCM) class means.
    programs = [compiled._hits, compiled._prepare] if eval_loop == "host" else [compiled]
    in_ynnpack.append([_ynn_counts(p.as_text())["convolution"] for p in programs])
  if not in_ynnpack[0][0]:
    pytest.skip("this jaxlib does not run convolutions on YNNPACK")
  # stem, 2 blocks of 2 convolutions, a shortcut (NCM's class means: none with an empty buffer
  # under "head"; the features' 6 under "ncm")
  six = 6 if eval_classifier == "ncm" else 0
  assert in_ynnpack == [[6, six][: len(programs)], [0, 0][: len(programs)]]
  np.testing.assert_array_equal(accuracies[0], accuracies[1])
  assert accuracies[0].shape == (2, 2) and np.all((accuracies[0] >= 0) & (accuracies[0] <= 1))


@pytest.mark.skipif(not CPU, reason="an XLA:CPU option")
def test_forward_only_options_keep_convolutions_out_of_ynnpack_reductions():
  # Without batch statistics XLA fuses convolutions into YNNPACK's pooling reduction
  # under the training options; the forward-only ones leave every one to Eigen.
  module = rar_jax.ReducedResNet18(4, nf=20, blocks=(1, 1))
  x = jnp.ones((8, 8, 8, 1))
  variables = module.init(jax.random.PRNGKey(0), x)
  compiled = [
    jax.jit(lambda v, x: module.apply(v, x, train=False))
    .lower(variables, x)
    .compile(compiler_options=cpu_conv.compiler_options("eigen", forward_only=only))
    .as_text()
    for only in (False, True)
  ]
  if not _ynn_counts(compiled[0])["convolution"]:
    pytest.skip("this jaxlib does not run convolutions on YNNPACK")
  assert [_ynn_counts(t)["convolution"] for t in compiled] == [6, 0]
  assert cpu_conv.compiler_options("default", forward_only=True) is None


def test_the_runner_evaluates_large_images_with_eigen_on_one_cpu(monkeypatch):
  # engine.compile_evaluation hands the evaluator the options eval_execution picks from the
  # image's side alone, and records the choice for metrics.json.
  seen = []

  class Evaluator:
    def lower(self, *args):
      return types.SimpleNamespace(compile=lambda: None)

  def spy(*args, **kwargs):
    seen.append(kwargs["compiler_options"])
    return Evaluator()

  monkeypatch.setattr(evaluator_lib, "make_evaluator", spy)
  module = rar_jax.create_model("resnet18_reduced", 10)
  config = types.SimpleNamespace(
    model="resnet18_reduced", eval_protocol="class", eval_classifier="head"
  )
  inputs = types.SimpleNamespace(eval_x=None, eval_y=None, task_of_class=None, states=None)
  recorded = []
  for side in (84, 32):
    plan = types.SimpleNamespace(input_shape=(side, side, 3), num_tasks=5, conv_model=True)
    _, execution = engine.compile_evaluation(plan, inputs, inputs, module, config)
    recorded.append(execution["eval_cpu_conv_library"])
  one_cpu = CPU and jax.device_count() == 1
  assert recorded == (["eigen", "default"] if one_cpu else ["default", "default"])
  assert seen == [cpu_conv.compiler_options(recorded[0], forward_only=True), None]
  if one_cpu and cpu_conv.compiler_options("eigen") is not None:
    assert seen[0] == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@pytest.mark.skipif(not CPU, reason="an XLA:CPU option")
def test_continual_evaluation_in_the_host_loop_follows_the_training_library():
  # As inside a scan (one program), the host loop's own continual-evaluation program
  # takes the training's cpu_conv_library, in its forward-only form.
  x, y, module, cfg, chain, tx, states = _small_resnet("er", 40, [0], 2)
  index = jnp.asarray(np.arange(40).reshape(1, 2, 2, 10))  # 2 segments of 2 steps
  toc = jnp.asarray([[0, 0, 1, 1]])
  one = evaluator_lib.make_run_evaluator(module, 2, chunk=8, unroll=True)
  in_ynnpack, curves = [], []
  for library in ("default", "eigen"):
    step = rar_jax.make_train_step(module, tx, cfg, chain)
    runner = loop.make_stream_runner(step, "map", "host", one, cpu_conv_library=library)
    compiled = runner.lower(states, x, y, index, x, y, toc).compile()
    in_ynnpack.append(_ynn_counts(compiled._evaluate.as_text())["convolution"])
    curves.append(np.asarray(compiled(states, x, y, index, x, y, toc)[2]))
  if not in_ynnpack[0]:
    pytest.skip("this jaxlib does not run convolutions on YNNPACK")
  assert in_ynnpack[1] == 0 < in_ynnpack[0]
  assert curves[0].shape == (1, 2, 2)
  np.testing.assert_allclose(curves[1], curves[0], atol=0.1)  # near-ties may flip a row


def test_evaluator_compiler_options_are_a_dict_in_one_line():
  module = rar_jax.MLP(4, hidden=(8,))
  with pytest.raises(ArgumentError, match=r"^compiler_options='eigen' is invalid: a dict"):
    evaluator_lib.make_evaluator(module, 2, compiler_options="eigen")


@pytest.mark.parametrize("conv_model", [True, False])
def test_a_model_by_import_path_runs_as_what_its_trace_says_it_is(conv_model):
  """A user's conv net takes the built-in conv net's execution, except its own convolutions;
  a dense one the MLP's."""
  from rar_jax import data as data_lib
  from rar_jax.runner import config as config_lib
  from rar_jax.runner import plan as plan_lib

  config = config_lib.base_config()
  config.update(methods="er_rar", num_seeds=2, iter_fgsm=3, run_batching="vmap")
  streams = data_lib.Streams(np.zeros((2, 1, 1, 10), np.int32), np.zeros((2, 10), np.int32), 0)

  def execution(model, conv_model=None):
    config.update(model=model)
    plan = plan_lib.make_plan(
      config, "er_rar", streams, 10, 1, input_shape=(84, 84, 3), conv_model=conv_model
    )
    return dict(plan.execution)

  # 2 vmapped runs: the built-in conv net convolves through im2col's matmuls on the CPU.
  assert execution("resnet18_reduced")["conv_impl"] == ("im2col" if CPU else "xla")
  host = CPU and conv_model
  assert execution("my_models:Net", conv_model) == {
    "conv_impl": "xla",  # its own convolutions, whatever the batching
    "stream_loop": "host" if host else "scan",
    "unroll": 3 if host else 0,
    "cpu_conv_library": "eigen" if host else "default",
  }
