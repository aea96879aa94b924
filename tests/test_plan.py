"""The run plan (`rar_jax.runner.plan.make_plan`): which keys and streams the
runs of a method get. No device work: the plan is a pure function of the
config and the streams."""

import numpy as np
import pytest

from rar_jax import data as data_lib
from rar_jax.runner import config as config_lib
from rar_jax.runner import plan as plan_lib

NUM_CLASSES = 10
# 30 samples of each of 10 classes: every seed's stream has the same length.
LABELS = np.repeat(np.arange(NUM_CLASSES), 30)


def plan_of(seed, num_seeds, sweep="", num_devices=1):
  config = config_lib.base_config()
  config.update(methods="er_rar", seed=seed, num_seeds=num_seeds, sweep=sweep, samples_per_task=40)
  seeds = [seed + i for i in range(num_seeds)]
  streams = data_lib.make_streams(LABELS, NUM_CLASSES, 5, 40, 10, seeds, False)
  return plan_lib.make_plan(config, "er_rar", streams, NUM_CLASSES, num_devices)


def test_every_run_of_a_cell_has_its_own_key_and_stream():
  plan = plan_of(seed=3, num_seeds=4, sweep="beta_coef=0.1,0.2")
  assert plan.seeds == [3, 4, 5, 6] and plan.num_runs == 8
  keys = np.asarray(plan.keys).reshape(plan.padded, -1)
  for c in range(len(plan.cells)):
    runs = range(plan.num_runs)[plan.cell_runs(c)]
    assert len({keys[r].tobytes() for r in runs}) == len(plan.seeds), "seeds share a key"
    assert len({plan.index[r].tobytes() for r in runs}) == len(plan.seeds), "seeds share a stream"


@pytest.mark.parametrize("num_devices", [1, 3])
def test_a_seeds_key_and_stream_do_not_depend_on_the_other_seeds_or_cells(num_devices):
  # Seed k trains from the same initialisation on the same stream whether it runs
  # alone, beside other seeds, or in any cell of a sweep (padding included).
  plan = plan_of(seed=3, num_seeds=4, sweep="beta_coef=0.1,0.2,0.3", num_devices=num_devices)
  assert plan.padded >= plan.num_runs
  for k in plan.seeds:
    alone = plan_of(seed=k, num_seeds=1)
    for c in range(len(plan.cells)):
      r = c * len(plan.seeds) + plan.seeds.index(k)
      np.testing.assert_array_equal(plan.keys[r], alone.keys[0], err_msg=f"seed {k}, cell {c}")
      np.testing.assert_array_equal(plan.index[r], alone.index[0], err_msg=f"seed {k}, cell {c}")
      np.testing.assert_array_equal(plan.task_of_class[r], alone.task_of_class[0])
      assert float(plan.hypers.beta_coef[r]) == pytest.approx(plan.cells[c]["beta_coef"])
