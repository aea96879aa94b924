"""Every bad input we tried, and the message it gets. Each must fail before any
work with one message naming the key, the value and what is allowed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rar_jax
from rar_jax import data, experiment
from rar_jax.config_base import base_config

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
    (dict(method="sgd"), ["'sgd'", "er_rar"]),
    (dict(methods="er,foo"), ["'foo'"]),
    (dict(dataset="imagenet"), ["dataset='imagenet'", "fashion_mnist"]),
    (dict(model="vit"), ["model='vit'", "resnet18_reduced"]),
    (dict(feature_layer="conv9"), ["feature_layer='conv9'", "penultimate"]),
    (dict(num_tasks=20), ["num_tasks=20", "divide"]),
    (dict(num_tasks=3), ["num_tasks=3", "divide"]),
    (dict(num_seeds=0), ["num_seeds=0"]),
    (dict(storage_policy="fifo"), ["storage_policy='fifo'", "class_balanced"]),
    (dict(attack_target="logits"), ["attack_target='logits'", "features"]),
    (dict(buffer_update="never"), ["buffer_update='never'", "per_experience"]),
    (dict(data_source="web"), ["data_source='web'", "tfds"]),
    (dict(mir_candidates=500, method="mir"), ["mir_candidates=500", "mem_size=200"]),
    (dict(validation_fraction=1.0), ["validation_fraction=1.0", "[0, 1)"]),
    (dict(eval_split="validation"), ["validation_fraction > 0"]),
    (dict(checkpoint_every_steps=150), ["checkpoint_every_steps=150", "multiple"]),
    (dict(run_batching="pmap"), ["run_batching='pmap'", "vmap"]),
]


@pytest.mark.parametrize("overrides,fragments", BAD_CONFIGS,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD_CONFIGS])
def test_bad_config_value(overrides, fragments):
  config = base_config()
  with config.unlocked():
    config.update(overrides)
  with pytest.raises(experiment.ConfigError) as e:
    experiment.validate_config(config)
  for fragment in fragments:
    assert fragment in str(e.value), str(e.value)


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
  import os
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
  config.update(dataset="digits", num_tasks=10, num_seeds=1, method="er_rar", progress=False)
  experiment.validate_config(config)
  y = np.repeat(np.arange(10), 20)
  s = data.make_streams(y, 10, 10, 0, 10, [0], False)
  assert s.index.shape == (1, 10, 2, 10)


def test_numerics_never_nan_with_extreme_epsilon_and_empty_buffer():
  module = rar_jax.MLP(4, hidden=(8,))
  for eps in (0.0, 1e-30, 1e6):
    cfg = rar_jax.ReplayConfig.from_method("er_mix_rar", num_classes=4, mem_size=10,
                                           batch_size_mem=5, exclude_current_labels=False)
    hyper = rar_jax.Hyper.create(opt_lr=0.1, epsilon_fgsm=eps, iter_fgsm=3)
    tx = rar_jax.make_optimizer(0.1)
    x = jnp.zeros((10, 2, 2, 1))  # constant inputs: zero attack gradients
    y = jnp.zeros(10, jnp.int32)
    state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x)
    step = jax.jit(rar_jax.make_train_step(module, tx, cfg))
    for _ in range(3):  # empty, then a buffer of one label (no different-label neighbour)
      state, m = step(state, x, y)
    assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(state))
    assert np.isfinite(float(m["loss_replay"]))
