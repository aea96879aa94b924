"""The paper's models. They know nothing of replay.

Protocol every model here follows, and any Flax module that wants to plug in:
``__call__(x, train: bool)`` returns logits, and the module sows the
activations a replay step may match into the ``"features"`` collection with
``self.sow("features", name, h)``. The layer the paper uses is sown as
``"penultimate"``. A module with batch norm also takes ``mask`` (rows that
count towards batch statistics) so padded replay rows never leak into them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from rar_jax.errors import ArgumentError

FEATURES = "features"  # the collection features are sown into
PENULTIMATE = "penultimate"


class MLP(nn.Module):
  """784-400-400-C ReLU network of the paper's MNIST experiments."""

  num_classes: int
  hidden: Sequence[int] = (400, 400)

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"dense{i}")(h))
      self.sow(FEATURES, f"hidden{i}", h)
    self.sow(FEATURES, PENULTIMATE, h)
    return nn.Dense(self.num_classes, name="head")(h)


def _bn(train: bool, mask: Optional[jnp.ndarray], name: str):
  # PyTorch's momentum 0.1 and eps 1e-5, as in the paper's ResNet.
  bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
  return lambda h: bn(h, mask=None if mask is None else mask[:, None, None, None])


# ---------------------------------------------------------------- convolutions

CONV_IMPLS = ("xla", "im2col")


def im2col_conv(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **unused,
):
  """``lax.conv_general_dilated`` for NHWC inputs and HWIO kernels as one matmul
  over shifted copies of the input (im2col).

  Why: XLA's CPU backend runs convolutions inside loop bodies (``lax.scan``,
  ``lax.map``) about 10x slower than outside (jax-ml/jax#12868); matmuls do not
  suffer from it. Under ``vmap`` over runs with per-run kernels it becomes one
  batched matmul instead of a grouped convolution. Same parameters and the same
  function as XLA's convolution, summed in another order.
  """
  del unused
  if (
    lhs_dilation not in (None, (1, 1))
    or rhs_dilation not in (None, (1, 1))
    or feature_group_count != 1
  ):
    raise ArgumentError("im2col_conv: no dilation or feature groups")
  if dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) != (0, 3, 1, 2):
    raise ArgumentError("im2col_conv: NHWC inputs only")
  kh, kw, _, cout = rhs.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  sh, sw = window_strides
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  # Column order (i, j, c) matches the HWIO kernel flattened to [kh*kw*cin, cout].
  cols = [
    x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  return jnp.dot(patches, rhs.reshape(-1, cout), precision=precision)


_CONV_FUNCTIONS = {"xla": None, "im2col": im2col_conv}


def _conv(conv_impl: str, features: int, kernel: int, stride: int, name: str, padding=1):
  if conv_impl not in CONV_IMPLS:
    raise ArgumentError(f"conv_impl={conv_impl!r} is invalid: one of {CONV_IMPLS}")
  return nn.Conv(
    features,
    (kernel, kernel),
    (stride, stride),
    padding=padding,
    use_bias=False,
    name=name,
    conv_general_dilated=_CONV_FUNCTIONS[conv_impl],
  )


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    conv = lambda f, s, n: _conv(self.conv_impl, f, 3, s, n)
    out = nn.relu(_bn(train, mask, "bn1")(conv(self.planes, self.stride, "conv1")(x)))
    out = _bn(train, mask, "bn2")(conv(self.planes, 1, "conv2")(out))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = _conv(self.conv_impl, self.planes, 1, self.stride, "shortcut_conv", padding=0)(x)
      shortcut = _bn(train, mask, "shortcut_bn")(shortcut)
    return nn.relu(out + shortcut)


class ReducedResNet18(nn.Module):
  """ResNet-18 with nf=20 (widths 20/40/80/160) for 32x32 inputs, as in GEM/MIR/RAR.

  Takes any (H, W, C) images with H, W >= `min_side` (28x28x1 Fashion-MNIST as
  well as 32x32x3 CIFAR): both end in a 4x4 map, averaged as the paper does.
  ``conv_impl`` picks how convolutions run ("xla" or "im2col", see
  `im2col_conv`); parameters are the same either way.
  """

  num_classes: int
  nf: int = 20
  blocks: Sequence[int] = (2, 2, 2, 2)
  conv_impl: str = "xla"

  @property
  def min_side(self) -> int:
    # Each stage after the first halves the side (rounding up); the average
    # pool needs a 4x4 map at the end.
    return 4 * 2 ** (len(self.blocks) - 1) - 2 ** (len(self.blocks) - 1) + 1

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    # Inputs stay in [0, 1] (the attack clips there); normalise inside.
    h = (x - 0.5) / 0.5
    h = _conv(self.conv_impl, self.nf, 3, 1, "stem")(h)
    h = nn.relu(_bn(train, mask, "stem_bn")(h))
    for stage, n_blocks in enumerate(self.blocks):
      for b in range(n_blocks):
        stride = 2 if (stage > 0 and b == 0) else 1
        h = BasicBlock(self.nf * 2**stage, stride, self.conv_impl, name=f"layer{stage + 1}_{b}")(
          h, train, mask
        )
      self.sow(FEATURES, f"layer{stage + 1}", h)
    h = nn.avg_pool(h, (4, 4), (4, 4)).reshape((h.shape[0], -1))
    self.sow(FEATURES, PENULTIMATE, h)
    return nn.Dense(self.num_classes, name="head")(h)


MODELS = ("mlp", "resnet18_reduced")
CONV_MODELS = ("resnet18_reduced",)


def create_model(name: str, num_classes: int, conv_impl: str = "xla") -> nn.Module:
  if name == "mlp":
    return MLP(num_classes)
  if name == "resnet18_reduced":
    return ReducedResNet18(num_classes, conv_impl=conv_impl)
  raise ArgumentError(f"model must be one of {MODELS}, got {name!r}")


def check_input_shape(name: str, module: nn.Module, shape: Tuple[int, ...]) -> None:
  """Raises ValueError, naming the model, the shape and what it needs, when
  ``module`` cannot take single inputs of ``shape``."""
  if isinstance(module, ReducedResNet18):
    need = module.min_side
    if len(shape) != 3 or min(shape[:2]) < need:
      raise ArgumentError(
        f"model {name} cannot take inputs of shape {tuple(shape)}: it needs "
        f"images (H, W, C) with H, W >= {need} (e.g. 28x28x1 or 32x32x3)"
      )
  elif isinstance(module, MLP) and math.prod(shape) < 1:
    raise ArgumentError(f"model {name} cannot take inputs of shape {tuple(shape)}: empty")
