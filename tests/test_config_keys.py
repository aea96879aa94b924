"""Every key of `base_config()` reaches the part of the program it names.

For each key, `PROBES` says what changing it must change and where that is
observed, at the lowest level that suffices (no training):

- `Plan`: a setting of that name in the run plan the runner hands to the step
  (`make_plan`: the `ReplayConfig`, the chain's stages and the settings they
  closed over, the traced `Hyper`, the optimiser's hyper-parameters) holds the
  new value, everywhere it appears;
- `PlanPart`: parts of the run plan (keys, streams, execution) differ;
- `Loader`: the data loader is asked for it (`prepare_data`'s `data.load` call);
- `Data`: the prepared arrays differ (training subset, evaluation split);
- `Evaluation`: the evaluator is built with it;
- `Run`: what `run_method` builds before training (model, optimiser, checkpoints);
- `Top`: what `train_and_evaluate` runs each method with (which methods, the
  matmul precision their programs are traced under).

Keys that cannot change what a run computes are in `NOT_TRAINING`, with the
reason. A key added to `base_config()` with neither fails `test_every_key`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from typing import Any, Dict, NamedTuple, Tuple

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import config as config_lib
from rar_jax.runner import engine, experiment, validate
from rar_jax.runner import plan as plan_lib

# The probes' starting point: small streams, two seeds, a method with every
# stage kind but the loss's (the loss's settings have no key).
BASE = dict(
  methods="er_mix_rar",
  num_seeds=2,
  samples_per_task=20,
  progress=False,
  plot=False,
  keep_checkpoints=0,
  rar_samples=0,
)


class Plan(NamedTuple):
  """Every setting named ``names`` (default: the key; a dotted name is a path's
  end, ``replay.mem_size``) in the run plan equals ``value``, and there is one."""

  value: Any
  base: Dict[str, Any] = {}
  names: Tuple[str, ...] = ()


class PlanPart(NamedTuple):
  """Each of the run plan's ``parts`` differs."""

  value: Any
  parts: Tuple[str, ...]
  base: Dict[str, Any] = {}


class Loader(NamedTuple):
  """The data loader's argument ``param`` equals ``value``."""

  value: Any
  param: str
  base: Dict[str, Any] = {}


class Data(NamedTuple):
  """Each of the prepared data's ``parts`` differs."""

  value: Any
  parts: Tuple[str, ...]
  base: Dict[str, Any] = {}


class Evaluation(NamedTuple):
  """The evaluator is built with the argument of the key's name set to ``value``."""

  value: Any
  base: Dict[str, Any] = {}


class Run(NamedTuple):
  """What `run_method` builds before training (``part``: model, checkpoints) differs."""

  value: Any
  part: str
  base: Dict[str, Any] = {}


class Top(NamedTuple):
  """What `train_and_evaluate` runs each method with (``part``: methods, precision,
  one entry per method run) differs, and is ``expect``."""

  value: Any
  part: str
  expect: Any
  base: Dict[str, Any] = {}


PROBES: Dict[str, Any] = {
  # Data and stream.
  "dataset": Loader("mnist", "name"),
  "data_source": Loader("embedded", "source"),
  "data_dir": Loader("/nonexistent/data", "data_dir"),
  "image_size": Loader(32, "image_size"),
  "folder_split": Loader("per_class", "folder_split"),
  "train_fraction": Loader(0.7, "train_fraction"),
  "num_tasks": PlanPart(2, ("index", "task_of_class")),
  "samples_per_task": PlanPart(30, ("index",)),
  "shuffle_classes": PlanPart(True, ("task_of_class", "index")),
  "stream": PlanPart("blurry", ("index",)),
  "disjoint_class_fraction": PlanPart(0.0, ("index", "disjoint_classes"), dict(stream="blurry")),
  "blurry_sample_fraction": PlanPart(0.3, ("index",), dict(stream="blurry")),
  "boundary_width": PlanPart(0.5, ("index",), dict(stream="gaussian")),
  "validation_fraction": Data(0.2, ("train_y",)),
  "eval_split": Data("validation", ("eval_x", "eval_y"), dict(validation_fraction=0.2)),
  "eval_protocol": Evaluation("task"),
  "eval_classifier": Evaluation("ncm"),
  # Model and optimiser.
  # (A dataset the ResNet can take; the probes load the digits whatever the config names.)
  "model": Run("resnet18_reduced", "model", dict(dataset="mnist")),
  "model_kwargs": Run({"hidden": (32,)}, "model_fields"),
  # With opt_lr None the look-ahead follows the learning rate.
  "learning_rate": Plan(0.05, names=("learning_rate", "opt_lr")),
  "ema_decay": Plan(0.9),
  "batch_size": PlanPart(5, ("index",)),
  "matmul_precision": Top(
    "highest", "precision", ["highest", "highest"], dict(methods="er,er_rar")
  ),
  # Method.
  "methods": Top("er,er_rar", "methods", ["er", "er_rar"]),
  "num_seeds": PlanPart(3, ("seeds", "keys", "index")),
  "seed": PlanPart(7, ("seeds", "keys", "index")),
  "mem_size": Plan(100),
  "batch_size_mem": Plan(5),
  "storage_policy": Plan("class_balanced"),
  "batch_norm_rows": Plan("joint"),
  "buffer_update": Plan("per_experience"),
  # The ReplayConfig's (a stage's own field of that name is its default rule).
  "exclude_current_labels": Plan(False, names=("replay.exclude_current_labels",)),
  "mir_candidates": Plan(20, dict(methods="mir")),
  "replay_iters": Plan(2),
  "aser_k": Plan(5, dict(methods="aser")),
  "aser_candidates": Plan(30, dict(methods="aser")),
  "aser_coop_size": Plan(50, dict(methods="aser")),
  "aser_type": Plan("asv", dict(methods="aser")),
  "beta_coef": Plan(0.5),
  "epsilon_fgsm": Plan(0.1),
  "alpha_fgsm": Plan(0.05),
  "iter_fgsm": Plan(3),
  "decay_factor_fgsm": Plan(0.5),
  # The look-ahead rate, apart from the learning rate (which stays 0.1).
  "opt_lr": Plan(0.05),
  "attack_target": Plan("label"),
  "attack_params": Plan("current"),
  "feature_layer": Plan("hidden0"),
  "mixup_alpha": Plan(0.4),
  "clean_rows": Plan("mixed"),
  "data_range": Plan((-1.0, 2.0), names=("perturb.data_range",)),
  "sweep": PlanPart("beta_coef=0.1,0.2", ("cells", "hypers", "keys")),
  # Running: how the runs share a device and loop; they must not change the
  # numbers (tests/test_loop.py), but they must reach the plan.
  "run_batching": PlanPart("vmap", ("batching",)),
  "stream_loop": PlanPart("host", ("execution",)),
  "conv_impl": PlanPart("im2col", ("execution",), dict(model="resnet18_reduced", dataset="mnist")),
  "cpu_conv_library": PlanPart(
    "eigen", ("execution",), dict(model="resnet18_reduced", dataset="mnist")
  ),
  "keep_checkpoints": Run(2, "checkpoints"),
}

# Keys that cannot change what a run computes: what it shows, writes or keeps.
NOT_TRAINING = {
  "progress": "the progress bar",
  "plot": "the pictures (accuracy.png, comparison.png, sensitivity.png)",
  "rar_samples": "the rar_samples.png picture",
  "overwrite": "the workdir: whether an earlier run's checkpoints are discarded",
  "checkpoint_every_steps": "the workdir: how often checkpoints are written",
  "log_every_steps": "progress and metrics lines per chunk; chunks resume alike (test_resume.py)",
  "eval_every": "continual evaluation's curves; training unchanged (test_continual.py)",
  "eval_samples_per_task": "the rows continual evaluation uses (test_continual.py)",
}


# ---------------------------------------------------------------- observing


def named_settings(obj) -> Dict[str, list]:
  """Every named leaf under ``obj``: fields of dataclasses and NamedTuples, dict
  entries, and the variables a function closed over (a stage's settings), by
  name and by dotted path (``replay.mem_size``: the field of the plan's
  ``replay``). A config never counts (it would name every key)."""
  found: Dict[str, list] = {}
  seen = set()

  def walk(o, path):
    if isinstance(o, ConfigDict) or id(o) in seen:
      return
    pair = isinstance(o, tuple) and not hasattr(o, "_fields") and len(o) == 2
    if pair and all(isinstance(v, float) for v in o):  # a (low, high) setting: data_range
      o = np.asarray(o)
    if o is None or isinstance(o, (bool, int, float, str, np.ndarray, np.generic, jax.Array)):
      for i in range(len(path)):
        found.setdefault(".".join(path[i:]), []).append(o)
      return
    seen.add(id(o))
    if isinstance(o, dict):
      for k, v in o.items():
        walk(v, path + (str(k),))
    elif isinstance(o, tuple) and hasattr(o, "_fields"):
      for k in o._fields:
        walk(getattr(o, k), path + (k,))
    elif dataclasses.is_dataclass(o) and not isinstance(o, type):
      for f in dataclasses.fields(o):
        walk(getattr(o, f.name), path + (f.name,))
    elif isinstance(o, (list, tuple)):
      for v in o:
        walk(v, path)
    elif isinstance(o, functools.partial):
      walk(o.func, path)
      for k, v in o.keywords.items():
        walk(v, path + (k,))
    elif isinstance(o, types.FunctionType) and o.__closure__:
      for k, cell in zip(o.__code__.co_freevars, o.__closure__):
        try:
          walk(cell.cell_contents, path + (k,))
        except ValueError:  # an empty cell
          pass

  walk(obj, ())
  return found


def same(a, b) -> bool:
  """Equal observations (arrays elementwise, containers and dataclasses by value)."""
  if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
    a, b = dataclasses.asdict(a), dataclasses.asdict(b)
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
  if isinstance(a, (np.ndarray, jax.Array, np.generic)) or isinstance(
    b, (np.ndarray, jax.Array, np.generic)
  ):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(a == b))
  return a == b


def holds(found, value) -> bool:
  if value is None or isinstance(value, (bool, str)):
    return found is value or found == value
  if isinstance(found, (bool, str)) or found is None:
    return False
  return bool(np.allclose(np.asarray(found, np.float64), value, rtol=1e-6, atol=0))


_DIGITS = {}


def cached_load(*args, **kwargs):
  """The digits, loaded once; the loader's arguments recorded."""
  bound = inspect.signature(LOAD).bind(*args, **kwargs)
  bound.apply_defaults()
  LOADS.append(dict(bound.arguments))
  if "digits" not in _DIGITS:
    _DIGITS["digits"] = LOAD("digits", "embedded")
  return _DIGITS["digits"]


LOAD = data_lib.load
LOADS: list = []


@pytest.fixture
def world(monkeypatch, tmp_path):
  """Observers of one config, on the embedded digits whatever the config names."""
  monkeypatch.setattr(data_lib, "load", cached_load)
  return World(monkeypatch, tmp_path)


class _Seen(Exception):
  pass


class World:
  def __init__(self, monkeypatch, tmp_path):
    self.monkeypatch, self.tmp_path, self.count = monkeypatch, tmp_path, 0

  def workdir(self) -> str:
    self.count += 1
    return str(self.tmp_path / f"run{self.count}")

  def data(self, config):
    LOADS.clear()
    data = experiment.prepare_data(config)
    return data, LOADS[-1]

  def plan(self, config):
    data, _ = self.data(config)
    method = config_lib.method_names(config)[0]
    return plan_lib.make_plan(
      config, method, data.streams, data.ds.num_classes, 1, input_shape=data.train_x.shape[1:]
    )

  def evaluation(self, config) -> dict:
    """The arguments the evaluator is built with."""
    calls = []

    class Lowered:
      def compile(self):
        return None

    class Evaluator:
      def lower(self, *args):
        return Lowered()

    def spy(*args, **kwargs):
      calls.append(kwargs)
      return Evaluator()

    plan = self.plan(config)
    data, _ = self.data(config)
    module = models.create_model(config.model, data.ds.num_classes)
    placed = types.SimpleNamespace(eval_x=None, eval_y=None, task_of_class=None)
    run = types.SimpleNamespace(states=None)
    with pytest.MonkeyPatch.context() as m:
      m.setattr(evaluator_lib, "make_evaluator", spy)
      engine.compile_evaluation(plan, placed, run, module, config)
    (kwargs,) = calls
    return kwargs

  def run(self, config) -> dict:
    """What `run_method` builds before it initialises the runs."""
    seen = {}

    def stop(plan, placed, module, tx, ckpt, sample_x, *args, **kwargs):
      seen.update(
        model=type(module).__name__,
        model_fields=repr(module),
        checkpoints=(type(ckpt).__name__, getattr(ckpt, "keep", None)),
      )
      if hasattr(ckpt, "close"):
        ckpt.close()
      raise _Seen

    data, _ = self.data(config)
    with pytest.MonkeyPatch.context() as m:
      m.setattr(experiment, "init_or_restore", stop)
      with pytest.raises(_Seen):
        experiment.run_method(config, config_lib.method_names(config)[0], data, self.workdir())
    return seen

  def top(self, config) -> dict:
    """Which methods `train_and_evaluate` runs, and under which matmul precision."""
    data, _ = self.data(config)
    runs = []

    def run_method(config, method, data, workdir):
      runs.append((method, jax.config.jax_default_matmul_precision))
      return {}

    with pytest.MonkeyPatch.context() as m:
      m.setattr(experiment, "prepare_data", lambda config: data)
      m.setattr(experiment, "run_method", run_method)
      m.setattr(experiment, "_compare", lambda *args: None)
      experiment.train_and_evaluate(config, self.workdir())
    return {"methods": [r[0] for r in runs], "precision": [r[1] for r in runs]}


def configs(key, probe) -> Tuple[ConfigDict, ConfigDict]:
  base = config_lib.base_config()
  base.update(dict(BASE, **probe.base))
  changed = ConfigDict(base.to_dict())
  changed[key] = probe.value
  assert not same(base[key], probe.value), f"{key}: the probe's value is the base value"
  validate.validate_config(changed)  # a value the program accepts
  return base, changed


def parts(obj, names) -> Dict[str, Any]:
  return {n: getattr(obj, n) for n in names}


# ---------------------------------------------------------------- the walk


def check(world: World, key: str, probe) -> None:
  base, changed = configs(key, probe)
  if isinstance(probe, Plan):
    settings = named_settings(world.plan(changed))
    for name in probe.names or (key,):
      assert name in settings, (
        f"config.{key}: no setting named {name!r} in the run plan (its ReplayConfig, "
        "stages, Hyper, optimiser hyper-parameters): the key does not reach the step"
      )
      wrong = [v for v in settings[name] if not holds(v, probe.value)]
      assert not wrong, f"config.{key}={probe.value!r}, but the plan's {name} holds {wrong}"
    return
  if isinstance(probe, Loader):
    _, args = world.data(changed)
    assert args[probe.param] == probe.value, (key, args)
    return
  if isinstance(probe, Evaluation):
    kwargs = world.evaluation(changed)
    assert kwargs.get(key) == probe.value, (
      f"config.{key}={probe.value!r}; the evaluator got {kwargs}"
    )
    return
  observe = {
    PlanPart: lambda c: parts(world.plan(c), probe.parts),
    Data: lambda c: parts(world.data(c)[0], probe.parts),
    Run: lambda c: {probe.part: world.run(c)[probe.part]},
    Top: lambda c: {probe.part: world.top(c)[probe.part]},
  }[type(probe)]
  before, after = observe(base), observe(changed)
  for part in before:
    assert not same(before[part], after[part]), (
      f"config.{key}: {probe.value!r} in place of {base[key]!r} leaves the {part} unchanged"
    )
  if isinstance(probe, Top):
    assert after[probe.part] == probe.expect, (key, after)


@pytest.mark.parametrize("key", list(config_lib.base_config().keys()))
def test_every_key(key, world):
  if key in NOT_TRAINING:
    assert key not in PROBES, f"{key} is both probed and declared as not affecting training"
    return
  assert key in PROBES, (
    f"config key {key!r} has no probe: add an entry to PROBES in tests/test_config_keys.py "
    "that changes it and observes its effect where it acts (Plan: a setting of the run plan; "
    "PlanPart: its keys/streams/execution; Loader: the data loader's arguments; Data: the "
    "prepared arrays; Evaluation: the evaluator's settings; Run: the model, optimiser or "
    "checkpoints run_method builds; Top: the methods and precision train_and_evaluate "
    "runs), or declare it in NOT_TRAINING with the reason it cannot change what a run computes"
  )
  check(world, key, PROBES[key])


def test_the_tables_name_only_keys_of_base_config():
  keys = set(config_lib.base_config().keys())
  assert not (set(PROBES) | set(NOT_TRAINING)) - keys
  assert not set(PROBES) & set(NOT_TRAINING)


def test_the_named_settings_walk_reaches_closures_and_finds_a_wrong_value():
  # The walk finds a stage's settings in its closures; a plan whose look-ahead
  # rate came from the learning rate is caught.
  def stage(mir_candidates: int):
    def fn():
      return mir_candidates

    return fn

  found = named_settings({"s": stage(20), "opt_lr": np.float32([0.1, 0.1])})
  assert found["mir_candidates"] == [20]
  assert not holds(found["opt_lr"][0], 0.05) and holds(found["opt_lr"][0], 0.1)
