import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rar_jax.runner.sweep import SweepError, parse_sweep

HERE = os.path.dirname(os.path.abspath(__file__))


def test_parse_sweep_is_a_cartesian_grid():
  cells = parse_sweep("beta_coef=0.1,0.3;iter_fgsm=2,5,7")
  assert len(cells) == 6
  assert cells[0] == {"beta_coef": 0.1, "iter_fgsm": 2}
  assert {c["iter_fgsm"] for c in cells} == {2, 5, 7}
  assert parse_sweep("") == [{}]


@pytest.mark.parametrize(
  "spec,match",
  [
    ("mem_size=1,2", "cannot be swept"),
    ("beta_coef=a,b", "numbers"),
    ("beta_coef", "KEY=V1"),
    ("beta_coef=0.1;beta_coef=0.2", "twice"),
  ],
)
def test_bad_sweeps(spec, match):
  with pytest.raises(SweepError, match=match):
    parse_sweep(spec)


def worker(mode, devices):
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )
  out = subprocess.run(
    [sys.executable, os.path.join(HERE, "sweep_worker.py"), mode],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
    cwd=os.path.dirname(HERE),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
def test_sharded_sweep_equals_cells_run_one_by_one():
  # 3 cells x 2 seeds = 6 runs on 8 devices: padded to 8, the padding dropped.
  sharded = worker("sweep", 8)
  assert sharded["devices"] == 8 and sharded["num_runs"] == 6
  alone = worker("cells", 1)
  assert alone["devices"] == 1
  assert sharded["cells"].keys() == alone["cells"].keys()
  for cell, acc in sharded["cells"].items():
    acc, want = np.asarray(acc), np.asarray(alone["cells"][cell])
    # One run per device is a vmapped step of batch 1; alone it is the unbatched
    # step. Some CPUs pick other kernels for the two (sums in another order), so
    # the runs agree exactly over the first tasks, then drift apart like any
    # float perturbation through SGD: a wrong cell or seed mapping differs at once.
    np.testing.assert_array_equal(acc[:, :2], want[:, :2], err_msg=cell)
    np.testing.assert_allclose(acc, want, atol=0.15, err_msg=cell)


@pytest.mark.slow
def test_two_processes_through_jax_distributed_equal_one_process():
  out = subprocess.run(
    [sys.executable, os.path.join(os.path.dirname(HERE), "bench", "distributed_check.py")],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["processes"] == 2 and result["identical"]
