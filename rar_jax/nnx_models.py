"""The paper's models in Flax NNX, layer for layer and name for name as the Linen
ones in `rar_jax.models`: the same parameter and batch-statistics trees, so a
state initialised with one runs the other. They follow the NNX protocol of
docs/own_model.md (``self.sow(nnx.Intermediate, name, h)``; ``mask=`` for batch
norm; NNX's ``train()``/``eval()`` modes) and are given to rar_jax as factories::

  model = functools.partial(rar_jax.nnx_models.MLP, 10)
  states = rar_jax.init_states(model, tx, cfg, chain, seeds=[0, 1], sample_x=x[:10])
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rar_jax import models
from rar_jax.errors import ArgumentError


class MLP(nnx.Module):
  """784-400-400-C ReLU network of the paper's MNIST experiments (`rar_jax.models.MLP`)."""

  def __init__(
    self,
    num_classes: int,
    in_features: int = 784,
    hidden: Sequence[int] = (400, 400),
    *,
    rngs: nnx.Rngs,
  ):
    widths = (in_features, *hidden)
    for i, (a, b) in enumerate(zip(widths, hidden)):
      setattr(self, f"dense{i}", nnx.Linear(a, b, rngs=rngs))  # Linen's names
    self.num_hidden = len(hidden)
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, x):
    h = x.reshape((x.shape[0], -1))
    for i in range(self.num_hidden):
      h = nnx.relu(getattr(self, f"dense{i}")(h))
      self.sow(nnx.Intermediate, f"hidden{i}", h)
    self.sow(nnx.Intermediate, models.PENULTIMATE, h)
    return self.head(h)


def _conv(cin: int, cout: int, kernel: int, stride: int, conv_impl: str, rngs, padding=1):
  if conv_impl not in models.CONV_IMPLS:
    raise ArgumentError(f"conv_impl={conv_impl!r} is invalid: one of {models.CONV_IMPLS}")
  return nnx.Conv(
    cin,
    cout,
    (kernel, kernel),
    (stride, stride),
    padding=padding,
    use_bias=False,
    conv_general_dilated=models.im2col_conv
    if conv_impl == "im2col"
    else jax.lax.conv_general_dilated,
    rngs=rngs,
  )


def _bn(features: int, rngs) -> nnx.BatchNorm:
  # PyTorch's momentum 0.1 and eps 1e-5, as in the paper's ResNet (and the Linen one).
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _norm(bn: nnx.BatchNorm, h, mask: Optional[jnp.ndarray]):
  return bn(h, mask=None if mask is None else mask[:, None, None, None])


class BasicBlock(nnx.Module):
  def __init__(self, in_planes: int, planes: int, stride: int, conv_impl: str, *, rngs):
    self.conv1 = _conv(in_planes, planes, 3, stride, conv_impl, rngs)
    self.bn1 = _bn(planes, rngs)
    self.conv2 = _conv(planes, planes, 3, 1, conv_impl, rngs)
    self.bn2 = _bn(planes, rngs)
    self.projects = stride != 1 or in_planes != planes
    if self.projects:
      self.shortcut_conv = _conv(in_planes, planes, 1, stride, conv_impl, rngs, padding=0)
      self.shortcut_bn = _bn(planes, rngs)

  def __call__(self, x, mask=None):
    out = nnx.relu(_norm(self.bn1, self.conv1(x), mask))
    out = _norm(self.bn2, self.conv2(out), mask)
    shortcut = _norm(self.shortcut_bn, self.shortcut_conv(x), mask) if self.projects else x
    return nnx.relu(out + shortcut)


class ReducedResNet18(nnx.Module):
  """ResNet-18 with nf=20 (widths 20/40/80/160), as `rar_jax.models.ReducedResNet18`;
  ``in_channels``: the images' channels (NNX layers are built with their input width)."""

  def __init__(
    self,
    num_classes: int,
    in_channels: int = 3,
    nf: int = 20,
    blocks: Sequence[int] = (2, 2, 2, 2),
    conv_impl: str = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    self.stem = _conv(in_channels, nf, 3, 1, conv_impl, rngs)
    self.stem_bn = _bn(nf, rngs)
    self.blocks = tuple(blocks)
    planes_in = nf
    for stage, n_blocks in enumerate(self.blocks):
      for b in range(n_blocks):
        planes = nf * 2**stage
        stride = 2 if (stage > 0 and b == 0) else 1
        block = BasicBlock(planes_in, planes, stride, conv_impl, rngs=rngs)
        setattr(self, f"layer{stage + 1}_{b}", block)  # Linen's names
        planes_in = planes
    self.head = nnx.Linear(planes_in, num_classes, rngs=rngs)

  def __call__(self, x, mask=None):
    # Inputs stay in [0, 1] (the attack clips there); normalise inside.
    h = nnx.relu(_norm(self.stem_bn, self.stem((x - 0.5) / 0.5), mask))
    for stage, n_blocks in enumerate(self.blocks):
      for b in range(n_blocks):
        h = getattr(self, f"layer{stage + 1}_{b}")(h, mask)
      self.sow(nnx.Intermediate, f"layer{stage + 1}", h)
    h = nnx.avg_pool(h, (4, 4), strides=(4, 4)).reshape((h.shape[0], -1))
    self.sow(nnx.Intermediate, models.PENULTIMATE, h)
    return self.head(h)
