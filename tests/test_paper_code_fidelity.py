"""bench/paper_code_fidelity.py: bad inputs are one line and exit 2; with the
paper's code (RAR_CL_DIR) and an interpreter with PyTorch (TORCH_PYTHON) the
full comparison must pass (skipped where either is missing)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "paper_code_fidelity.py")
PAPER_FILES = ("model.py", "mir.py", "mir_dadv.py", "buffer.py", "utils.py")


def fidelity(*args, timeout=120):
  return subprocess.run(
    [sys.executable, SCRIPT, *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )


def one_line_error(out, *fragments):
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  for f in fragments:
    assert f in lines[0], lines[0]


def fake_checkout(tmp_path):
  for name in PAPER_FILES:
    (tmp_path / name).write_text("")
  return str(tmp_path)


def test_missing_checkout_is_one_line(tmp_path):
  out = fidelity(f"--rar_cl_dir={tmp_path / 'nowhere'}")
  one_line_error(out, "no such directory", "git clone https://github.com/lillykumari8/RAR-CL")


def test_checkout_without_the_paper_files_is_one_line(tmp_path):
  (tmp_path / "model.py").write_text("")
  out = fidelity(f"--rar_cl_dir={tmp_path}")
  one_line_error(out, "mir_dadv.py", "buffer.py", "git clone")


def test_interpreter_without_torch_is_one_line(tmp_path):
  # This test's interpreter (rar_jax's) has no PyTorch.
  pytest.importorskip("jax")
  try:
    import torch  # noqa: F401

    pytest.skip("this interpreter has PyTorch")
  except ImportError:
    pass
  out = fidelity(f"--rar_cl_dir={fake_checkout(tmp_path)}", f"--torch_python={sys.executable}")
  one_line_error(out, "torch", "pip install torch")


def test_interpreter_that_does_not_exist_is_one_line(tmp_path):
  out = fidelity(
    f"--rar_cl_dir={fake_checkout(tmp_path)}", f"--torch_python={tmp_path / 'no-python'}"
  )
  one_line_error(out, "no-python", "--torch_python")


@pytest.mark.slow
def test_one_update_agrees_with_the_paper_code():
  rar_cl, torch_python = os.environ.get("RAR_CL_DIR"), os.environ.get("TORCH_PYTHON")
  if not (rar_cl and all(os.path.isfile(os.path.join(rar_cl, f)) for f in PAPER_FILES)):
    pytest.skip("set RAR_CL_DIR to a checkout of github.com/lillykumari8/RAR-CL")
  if not torch_python or subprocess.run([torch_python, "-c", "import torch"]).returncode:
    pytest.skip("set TORCH_PYTHON to an interpreter with PyTorch")
  out = fidelity(f"--rar_cl_dir={rar_cl}", f"--torch_python={torch_python}", timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "result: all gated differences within 1e-05" in out.stdout
