"""Runs inside an interpreter with PyTorch: times the paper's own training step
(RAR-CL, github.com/lillykumari8/RAR-CL) on synthetic data, one JSON line per
method. Called by bench/paper_code_step_time.py; installs nothing.

Two imports of the paper's code serve only its plots and are replaced by
stand-ins when missing: MulticoreTSNE (t-SNE figures) and advertorch's
`NormalizeByChannelMeanStd` (re-written below with the same arithmetic).
"""

import argparse
import contextlib
import json
import sys
import time
import types


def stub_missing_modules():
  import torch

  try:
    import MulticoreTSNE  # noqa: F401
  except ImportError:
    sys.modules["MulticoreTSNE"] = types.SimpleNamespace(MulticoreTSNE=None)
  try:
    from advertorch.utils import NormalizeByChannelMeanStd  # noqa: F401
  except ImportError:

    class NormalizeByChannelMeanStd(torch.nn.Module):
      def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

      def forward(self, x):
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    advertorch = types.ModuleType("advertorch")
    advertorch.utils = types.SimpleNamespace(NormalizeByChannelMeanStd=NormalizeByChannelMeanStd)
    sys.modules["advertorch"] = advertorch
    sys.modules["advertorch.utils"] = advertorch.utils


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--rar_cl_dir", required=True)
  p.add_argument("--model", default="resnet18_reduced")
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--iter_fgsm", type=int, default=2)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0 = its default)")
  p.add_argument("--input_size", type=int, default=0, help="square side (0: 32 ResNet, 28 MLP)")
  a = p.parse_args()
  sys.path.insert(0, a.rar_cl_dir)
  import numpy as np
  import torch

  stub_missing_modules()
  if a.threads:
    torch.set_num_threads(a.threads)
  import mir
  import mir_dadv
  from buffer import Buffer
  from model import MLP, ResNet18

  conv = a.model == "resnet18_reduced"
  input_size = (3, 32, 32) if conv else (1, 28, 28)
  if a.input_size:
    input_size = (input_size[0], a.input_size, a.input_size)
  for method in a.methods.split(","):
    paper_method = {"er": "rand_replay", "er_rar": "er_rar"}[method]
    args = types.SimpleNamespace(
      dataset="split_cifar10" if conv else "split_mnist",
      input_size=input_size,
      n_classes=10,
      mem_size=200,
      buffer_batch_size=10,
      subsample=10,
      lr=0.1,
      method=paper_method,
      cuda=False,
      device="cpu",
      gen=False,
      multiple_heads=False,
      compare_to_old_logits=False,
      d_eps=0.0314,
      d_alpha=0.0314,
      d_steps=a.iter_fgsm,
      d_last=False,
      d_momentum=True,
      d_rand_start=False,
      d_coeff=0.5,
      sim_metric="euclidean",
    )
    torch.manual_seed(0)
    model = ResNet18(10, nf=20, input_size=input_size) if conv else MLP(args)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    with contextlib.redirect_stdout(sys.stderr):  # it prints its size; stdout is JSON lines
      buf = Buffer(args)
    update = mir.retrieve_replay_update if method == "er" else mir_dadv.retrieve_er_rar
    gen = torch.Generator().manual_seed(0)

    def batch(classes):
      x = torch.rand(10, *input_size, generator=gen)
      y = torch.tensor(np.resize(classes, 10), dtype=torch.long)
      return x, y

    for _ in range(20):  # task 0 fills the buffer (no replay yet, as the paper's loop)
      x, y = batch([0, 1])
      update(args, model, opt, x, y, buf, 0, None, rehearse=False)
      buf.add_reservoir(x, y, None, 0)
    batches = [batch([2, 3]) for _ in range(a.steps)]
    times, cpu_times = [], []
    for _ in range(a.repeats + 1):  # the first pass warms up
      t0, c0 = time.perf_counter(), time.process_time()
      for x, y in batches:
        update(args, model, opt, x, y, buf, 1, None, rehearse=True)
        buf.add_reservoir(x, y, None, 1)
      times.append(time.perf_counter() - t0)
      cpu_times.append(time.process_time() - c0)
    times, cpu_times = times[1:], cpu_times[1:]
    print(
      json.dumps(
        {
          "bench": "paper_code_step_time",
          "system": "RAR-CL (PyTorch)",
          "model": a.model,
          "method": method,
          "seeds": 1,
          "iter_fgsm": a.iter_fgsm,
          "input_shape": list(input_size),
          "ms_per_step": round(1000 * min(times) / a.steps, 3),
          "ms_per_step_median": round(1000 * float(np.median(times)) / a.steps, 3),
          "cpu_ms_per_step": round(1000 * min(cpu_times) / a.steps, 3),
          "torch": torch.__version__,
          "threads": torch.get_num_threads(),
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  main()
