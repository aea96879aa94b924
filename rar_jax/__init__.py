"""rar_jax: Retrospective Adversarial Replay (Kumari et al., NeurIPS 2022) in JAX.

Importing the library never imports TensorFlow; only `rar_jax.data`'s TFDS
path does, on demand.
"""

from rar_jax import errors
from rar_jax.core import buffer, stages
from rar_jax.core.aser import aser_retrieve, knn_shapley
from rar_jax.core.attack import mifgsm
from rar_jax.core.method import METHODS, Hyper, ReplayConfig, parse_method
from rar_jax.core.mixup import mixup
from rar_jax.core.neighbors import nearest_neighbors, neighbor_distances
from rar_jax.core.optim import evaluation_params, make_optimizer, track_params_ema
from rar_jax.core.retrieval import mir_retrieve, random_retrieve
from rar_jax.core.stages import build_method
from rar_jax.core.step import (
  TrainState,
  init_train_state,
  make_predict,
  make_rar_preview,
  make_train_step,
)
from rar_jax.models import MLP, ReducedResNet18, create_model
from rar_jax.runner.training import evaluate, init_states, run_stream, run_stream_with_curves

__version__ = "0.1.0"


def __getattr__(name: str):
  """``rar_jax.data`` and ``rar_jax.evaluation`` on first use (``import rar_jax``
  stays light; neither imports TensorFlow)."""
  if name in ("data", "evaluation"):
    import importlib

    return importlib.import_module(f"rar_jax.{name}")
  raise AttributeError(f"module 'rar_jax' has no attribute {name!r}")


__all__ = [
  "errors",
  "init_states",
  "run_stream",
  "run_stream_with_curves",
  "evaluate",
  "buffer",
  "mifgsm",
  "METHODS",
  "Hyper",
  "ReplayConfig",
  "mixup",
  "MLP",
  "ReducedResNet18",
  "create_model",
  "nearest_neighbors",
  "neighbor_distances",
  "mir_retrieve",
  "random_retrieve",
  "TrainState",
  "init_train_state",
  "make_optimizer",
  "make_predict",
  "make_train_step",
  "stages",
  "aser_retrieve",
  "knn_shapley",
  "parse_method",
  "build_method",
  "make_rar_preview",
  "evaluation_params",
  "track_params_ema",
]
