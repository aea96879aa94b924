"""Runs inside an interpreter with PyTorch: one update of the paper's own code
(RAR-CL, unmodified) on the inputs, weights and random draws of a case file
written by bench/paper_code_fidelity.py, and writes back what it computed.

  python paper_code_fidelity_worker.py RAR_CL_DIR CASE.npz OUT.npz

Nothing of the paper's code is edited: its random draws are fixed by replacing,
for the one update, the sampling functions it calls (`np.random.choice` in
`Buffer.sample`, `torch.randperm` and `np.random.beta` in `utils.mixup`,
`torch.multinomial` in `Buffer.sample_class_balanced`) with ones that return
the draws rar_jax made; what it computes is read by wrapping the functions it
calls (`get_future_step_parameters`, `cdist`, `Linf_distillation`, `mixup`,
the cross-entropies) without changing their results. A float64 case sets
PyTorch's default dtype to float64 and gives the buffer float64 rows.
"""

import contextlib
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from paper_code_worker import stub_missing_modules  # noqa: E402

# method -> (module, update function, the paper's --method)
UPDATES = {
  "er": ("mir", "retrieve_replay_update", "rand_replay"),
  "er_mix": ("mir_dadv", "retrieve_er_mixup", "er_mixup"),
  "er_rar": ("mir_dadv", "retrieve_er_rar", "er_rar"),
  "er_mix_rar": ("mir_dadv", "retrieve_er_mixup_rar", "er_mixup_rar"),
  "mir": ("mir", "retrieve_replay_update", "mir_replay"),
  "mir_rar": ("mir_dadv", "retrieve_mir_rar", "mir_rar"),
  "mir_mix_rar": ("mir_dadv", "retrieve_mir_mixup_rar", "mir_mixup_rar"),
  "aser_rar": ("mir_dadv", "retrieve_aser_rar", "aser_rar"),
}


@contextlib.contextmanager
def patched(obj, name, fn):
  old = getattr(obj, name)
  setattr(obj, name, fn(old))
  try:
    yield
  finally:
    setattr(obj, name, old)


def fixed(draws, what):
  """A stand-in that returns the next fixed draw of ``what``."""

  def make(_old):
    def fn(*args, **kwargs):
      if not draws:
        raise RuntimeError(f"the paper's code drew {what} once more than rar_jax did")
      return draws.pop(0)

    return fn

  return make


def main():
  rar_cl_dir, case_path, out_path = sys.argv[1:4]
  sys.path.insert(0, rar_cl_dir)
  import torch

  torch.set_num_threads(1)
  stub_missing_modules()
  import mir
  import mir_dadv
  import torch.nn.functional as F
  from buffer import Buffer
  from model import MLP, ResNet18

  case = dict(np.load(case_path))
  if str(case["dtype"]) == "float64":  # the paper's code as it is, in float64
    torch.set_default_dtype(torch.float64)
  method = str(case["method"])
  conv = str(case["model"]) == "resnet18_reduced"
  h = {k[len("hyper/") :]: case[k].item() for k in case if k.startswith("hyper/")}
  input_size = tuple(int(s) for s in case["buffer_x"].shape[1:])
  module_name, fn_name, paper_method = UPDATES[method]
  args = types.SimpleNamespace(
    dataset="split_cifar10" if conv else "split_mnist",
    input_size=input_size,
    n_classes=int(h["n_classes"]),
    mem_size=int(case["buffer_x"].shape[0]),
    buffer_batch_size=int(h["batch_size_mem"]),
    subsample=int(h["subsample"]),
    lr=h["lr"],
    method=paper_method,
    cuda=False,
    device="cpu",
    gen=False,
    multiple_heads=False,
    compare_to_old_logits=False,
    d_eps=h["epsilon_fgsm"],
    d_alpha=h["alpha_fgsm"],
    d_steps=int(h["iter_fgsm"]),
    d_last=False,
    d_momentum=True,
    d_rand_start=False,
    d_coeff=h["beta_coef"],
    sim_metric="euclidean",
    aser_type="asvm",
    knn=int(h["aser_k"]),
    aser_num_retrieve=int(h["batch_size_mem"]),
    coop_size=int(h["aser_coop_size"]),
  )
  model = ResNet18(args.n_classes, nf=20, input_size=input_size) if conv else MLP(args)
  weights = {k[len("w/") :]: torch.from_numpy(case[k]) for k in case if k.startswith("w/")}
  missing, unexpected = model.load_state_dict(weights, strict=False)
  missing = [k for k in missing if not k.endswith("num_batches_tracked") and "normalizer" not in k]
  if missing or unexpected:
    raise RuntimeError(f"weights do not fit the paper's model: {missing} {unexpected}")
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=args.lr)
  with contextlib.redirect_stdout(sys.stderr):  # it prints its size
    buf = Buffer(args)
  buf.bx = torch.from_numpy(case["buffer_x"]).clone()  # its dtype (float32 or 64)
  buf.by.copy_(torch.from_numpy(case["buffer_y"]).long())
  buf.bt.copy_(torch.from_numpy(case["buffer_y"]).long() // 2)
  buf.current_index = buf.n_seen_so_far = args.mem_size

  draws = {
    "choice": [case[k] for k in sorted(k for k in case if k.startswith("choice"))],
    "multinomial": [torch.from_numpy(case["multinomial"])] if "multinomial" in case else [],
    "randperm": [torch.from_numpy(case["perm"])] if "perm" in case else [],
    "beta": [float(case["lam"])] if "lam" in case else [],
  }
  seen = {"lookahead": [], "nearest": [], "x_adv": [], "attack_in": [], "mix_in": [], "ce": []}
  forwards = []

  def record_lookahead(old):
    def fn(*a, **kw):
      net = old(*a, **kw)
      seen["lookahead"].append({k: v.detach().numpy().copy() for k, v in net.state_dict().items()})
      return net

    return fn

  def record_cdist(old):
    def fn(a, b, **kw):
      d = old(a, b, **kw)
      seen["nearest"].append(d.argmin(axis=1))
      return d

    return fn

  def record_attack(old):
    def fn(args_, model_, dat, *a, **kw):
      out = old(args_, model_, dat, *a, **kw)
      seen["attack_in"].append(dat.detach().numpy().copy())
      seen["x_adv"].append(out.detach().numpy().copy())
      return out

    return fn

  def record_mixup(old):
    def fn(args_, data, *a, **kw):
      seen["mix_in"].append(data.detach().numpy().copy())
      return old(args_, data, *a, **kw)

    return fn

  def record_ce(old):
    def fn(*a, **kw):
      out = old(*a, **kw)
      seen["ce"].append(float(out.detach().mean()))
      return out

    return fn

  model.register_forward_pre_hook(
    lambda mod, inp: forwards.append(inp[0].detach().numpy().copy()) if mod is model else None
  )
  with contextlib.ExitStack() as stack:
    for obj, name, fn in (
      (np.random, "choice", fixed(draws["choice"], "buffer indices (np.random.choice)")),
      (torch, "multinomial", fixed(draws["multinomial"], "a class-balanced set")),
      (torch, "randperm", fixed(draws["randperm"], "a MixUp permutation")),
      (np.random, "beta", fixed(draws["beta"], "a MixUp lambda")),
      (mir, "get_future_step_parameters", record_lookahead),
      (mir_dadv, "get_future_step_parameters", record_lookahead),
      (mir_dadv, "cdist", record_cdist),
      (mir_dadv, "Linf_distillation", record_attack),
      (mir_dadv, "mixup", record_mixup),
      (F, "cross_entropy", record_ce),
      (mir_dadv, "cross_entropy_loss_mu", record_ce),
    ):
      stack.enter_context(patched(obj, name, fn))
    x = torch.from_numpy(case["x"])
    y = torch.from_numpy(case["y"]).long()
    update = getattr({"mir": mir, "mir_dadv": mir_dadv}[module_name], fn_name)
    update(args, model, opt, x, y, buf, 1, None, rehearse=True)
  left = {k: len(v) for k, v in draws.items() if v}
  if left:
    raise RuntimeError(f"the paper's code drew fewer numbers than rar_jax did: {left}")

  out = {f"updated/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
  if seen["lookahead"]:
    out.update({f"lookahead/{k}": v for k, v in seen["lookahead"][-1].items()})
  if seen["nearest"]:
    out["nearest"] = seen["nearest"][-1]
  if seen["x_adv"]:
    out["x_adv"] = seen["x_adv"][-1]
    out["attack_in"] = seen["attack_in"][-1]
  # The cross-entropies in call order: the incoming batch first, the replay
  # terms last ((perturbed, clean) for RAR; MIR's candidate losses between).
  ce = seen["ce"]
  out["loss/current"] = np.float64(ce[0])
  if method.endswith("rar"):
    out["loss/perturbed"], out["loss/clean"] = np.float64(ce[-2]), np.float64(ce[-1])
  else:
    out["loss/replay"] = np.float64(ce[-1])
  if seen["mix_in"]:
    out["replay_rows"] = seen["mix_in"][-1]
  else:
    out["replay_rows"] = forwards[-1]
  np.savez(out_path, **out)


if __name__ == "__main__":
  main()
