"""Shared by `paper_code_fidelity.py`: its setting (the paper's keys, the
buffer and batches), rar_jax's weights under the paper's names and layouts,
probes into the jitted step, and the fixed inputs of one case."""

import numpy as np

# The paper's command lines: Split-MNIST (MLP) and Split-CIFAR10 at memory 200 (ResNet).
HYPER = {
  "mlp": dict(lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5),
  "resnet18_reduced": dict(
    lr=0.1, beta_coef=0.5, epsilon_fgsm=0.0314, alpha_fgsm=0.0314, iter_fgsm=2
  ),
}
C, MEM, N = 10, 200, 10  # classes, memory, incoming and replay batch
INCOMING = (4, 5)  # the incoming classes; the buffer holds 0..5, replay skips 4 and 5
CANDIDATES, COOP, K = 50, 100, 10  # MIR / ASER candidates, ASER's cooperative set and K


# ------------------------------------------------------------- layouts


def torch_state(params, batch_stats, model):
  """rar_jax's parameters (and batch statistics) under the paper's model's
  state-dict names and layouts: Linear [out, in], conv OIHW."""
  out = {}

  def put(name, leaf, kind):
    a = np.asarray(leaf)
    if kind == "kernel":
      a = a.T if a.ndim == 2 else a.transpose(3, 2, 0, 1)  # [in,out] / HWIO -> OIHW
    out[name] = np.ascontiguousarray(a)

  if model == "mlp":
    for flax, paper in (("dense0", "hidden.0"), ("dense1", "hidden.2"), ("head", "linear")):
      put(f"{paper}.weight", params[flax]["kernel"], "kernel")
      put(f"{paper}.bias", params[flax]["bias"], "bias")
    return out

  def bn(flax_scope, stats_scope, paper):
    put(f"{paper}.weight", flax_scope["scale"], "")
    put(f"{paper}.bias", flax_scope["bias"], "")
    if stats_scope is not None:
      put(f"{paper}.running_mean", stats_scope["mean"], "")
      put(f"{paper}.running_var", stats_scope["var"], "")

  bs = batch_stats or {}
  put("conv1.weight", params["stem"]["kernel"], "kernel")
  bn(params["stem_bn"], bs.get("stem_bn"), "bn1")
  for name, block in params.items():
    if not name.startswith("layer"):
      continue
    stage, b = name[len("layer") :].split("_")
    p, s = f"layer{stage}.{b}", bs.get(name, {})
    for conv, bnorm in (("conv1", "bn1"), ("conv2", "bn2")):
      put(f"{p}.{conv}.weight", block[conv]["kernel"], "kernel")
      bn(block[bnorm], s.get(bnorm), f"{p}.{bnorm}")
    if "shortcut_conv" in block:
      put(f"{p}.shortcut.0.weight", block["shortcut_conv"]["kernel"], "kernel")
      bn(block["shortcut_bn"], s.get("shortcut_bn"), f"{p}.shortcut.1")
  put("linear.weight", params["head"]["kernel"], "kernel")
  put("linear.bias", params["head"]["bias"], "bias")
  return out


def nchw(x):
  return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


# ------------------------------------------------------------- one case


class Probe:
  """Reads values out of the jitted step (`jax.debug.callback`), by name."""

  def __init__(self):
    self.values, self.count = {}, 0

  def record(self, name, tree):
    import jax

    jax.debug.callback(lambda t: self.values.__setitem__(name, jax.device_get(t)), tree)

  def wrap(self, stage):
    """``stage`` with a probe of θ' (where it sees it) and of its outputs."""
    if stage.kind == "loss":

      def loss_fn(logits, targets, ctx, replay):
        rows = stage.fn(logits, targets, ctx, replay)
        self.record(f"loss{self.count}_{'replay' if replay else 'current'}", rows)
        self.count += 1
        return rows

      return stage._replace(fn=loss_fn)

    def fn(ctx, *args):
      if ctx.lookahead_params is not None:
        self.record("lookahead", ctx.lookahead_params)
      out = stage.fn(ctx, *args)
      self.record(stage.kind, out)
      return out

    return stage._replace(fn=fn)


def fixed_inputs(model, seed, dtype):
  """Weights drawn as PyTorch initialises them, a full buffer of classes 0-5
  and an incoming batch of classes 4 and 5 (images in [0, 1])."""
  rng = np.random.default_rng(seed)
  shape = (28, 28, 1) if model == "mlp" else (32, 32, 3)
  templates = rng.uniform(size=(C, *shape)) * (rng.uniform(size=(C, *shape)) < 0.6)

  def images(labels):
    noise = 0.15 * rng.normal(size=(len(labels), *shape))
    return np.clip(templates[labels] + noise, 0, 1).astype(np.float32).astype(dtype)

  by = rng.integers(0, 6, MEM)
  y = np.resize(np.array(INCOMING), N)
  return rng, images(by), by.astype(np.int32), images(y), y.astype(np.int32)


def torch_like(rng, params, dtype):
  """Every kernel and bias ~ U(±1/sqrt(fan_in)) (PyTorch's default), batch
  norm scales and shifts near 1 and 0 (so their gradients matter)."""
  import jax

  def leaf(path, p):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      bound = 1 / np.sqrt(np.prod(p.shape[:-1]))
    elif "scale" in name:
      return (1 + 0.2 * rng.uniform(-1, 1, p.shape)).astype(np.float32).astype(dtype)
    elif "bias" in name and "bn" in name:
      return (0.1 * rng.uniform(-1, 1, p.shape)).astype(np.float32).astype(dtype)
    else:  # a dense bias: its layer's fan-in
      bound = bound_of[name.rsplit("[", 1)[0]]
    return rng.uniform(-bound, bound, p.shape).astype(np.float32).astype(dtype)

  bound_of = {}
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      bound_of[name.rsplit("[", 1)[0]] = 1 / np.sqrt(np.prod(p.shape[:-1]))
  return jax.tree_util.tree_map_with_path(leaf, params)
