"""Every default of a replay method, in one place. The stage constructors
(`rar_jax.core.stages`), `Hyper.create`, `ReplayConfig` and the runner's
`base_config()` all read them from here, so the library and the command line
cannot disagree (tests/test_defaults.py).

The names are the config keys': one name per concept in code, config and docs.
The values are the paper's Split-MNIST command line (docs/fidelity.md: beta 0.3,
epsilon 0.3, 5 steps) and its code's defaults elsewhere, with one difference:
the attack step ``alpha_fgsm`` defaults to ``epsilon_fgsm / iter_fgsm`` (0.06
with these values, the step that reaches the radius in ``iter_fgsm`` steps),
where that command line sets alpha 0.075; give ``alpha_fgsm=0.075`` for the
paper's exact line.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

DEFAULTS: Mapping[str, Any] = MappingProxyType(
  {
    # Replay structure (`ReplayConfig`).
    "mem_size": 200,
    "batch_size_mem": 10,
    "replay_iters": 1,
    "exclude_current_labels": None,  # None = the loss stage's rule
    "feature_layer": "penultimate",
    "batch_norm_rows": "group",
    "storage_policy": "reservoir",
    "buffer_update": "online",
    # MIR retrieval.
    "mir_candidates": 50,
    # ASER retrieval.
    "aser_k": 10,
    "aser_candidates": 50,
    "aser_coop_size": 100,
    "aser_type": "asvm",
    # MixUp.
    "mixup_alpha": 1.0,
    # RAR.
    "beta_coef": 0.3,
    "epsilon_fgsm": 0.3,
    "alpha_fgsm": None,  # None = epsilon_fgsm / iter_fgsm
    "iter_fgsm": 5,
    "decay_factor_fgsm": 1.0,
    "attack_target": "features",
    "attack_params": "lookahead",
    "clean_rows": "unmixed",
    "data_range": (0.0, 1.0),
  }
)
