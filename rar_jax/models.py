"""The paper's models. They know nothing of replay.

Protocol every model here follows, and any Flax module that wants to plug in:
``__call__(x, train: bool)`` returns logits, and the module sows the
activations a replay step may match into the ``"features"`` collection with
``self.sow("features", name, h)``. The layer the paper uses is sown as
``"penultimate"``. A module with batch norm also takes ``mask`` (rows that
count towards batch statistics) so padded replay rows never leak into them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

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


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    conv = lambda f, s, n: nn.Conv(f, (3, 3), (s, s), padding=1, use_bias=False, name=n)
    out = nn.relu(_bn(train, mask, "bn1")(conv(self.planes, self.stride, "conv1")(x)))
    out = _bn(train, mask, "bn2")(conv(self.planes, 1, "conv2")(out))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = nn.Conv(self.planes, (1, 1), (self.stride, self.stride), use_bias=False,
                         name="shortcut_conv")(x)
      shortcut = _bn(train, mask, "shortcut_bn")(shortcut)
    return nn.relu(out + shortcut)


class ReducedResNet18(nn.Module):
  """ResNet-18 with nf=20 (widths 20/40/80/160) for 32x32 inputs, as in GEM/MIR/RAR."""

  num_classes: int
  nf: int = 20
  blocks: Sequence[int] = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    # Inputs stay in [0, 1] (the attack clips there); normalise inside.
    h = (x - 0.5) / 0.5
    h = nn.Conv(self.nf, (3, 3), padding=1, use_bias=False, name="stem")(h)
    h = nn.relu(_bn(train, mask, "stem_bn")(h))
    for stage, n_blocks in enumerate(self.blocks):
      for b in range(n_blocks):
        stride = 2 if (stage > 0 and b == 0) else 1
        h = BasicBlock(self.nf * 2**stage, stride, name=f"layer{stage + 1}_{b}")(h, train, mask)
      self.sow(FEATURES, f"layer{stage + 1}", h)
    h = nn.avg_pool(h, (4, 4), (4, 4)).reshape((h.shape[0], -1))
    self.sow(FEATURES, PENULTIMATE, h)
    return nn.Dense(self.num_classes, name="head")(h)


def create_model(name: str, num_classes: int) -> nn.Module:
  if name == "mlp":
    return MLP(num_classes)
  if name == "resnet18_reduced":
    return ReducedResNet18(num_classes)
  raise ValueError(f"model must be one of ('mlp', 'resnet18_reduced'), got {name!r}")


MODELS = ("mlp", "resnet18_reduced")
