"""What `quality.py` runs: its grids, its test rows and the names of its runs
(also read by `report.py`, which renders the tables from those names)."""

PAPER = dict(beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5)
AVALANCHE = dict(beta_coef=0.5, epsilon_fgsm=0.0314, alpha_fgsm=0.0314 / 2, iter_fgsm=2)
TUNE_GRID = "beta_coef=0.1,0.3,0.5,0.7;epsilon_fgsm=0.05,0.1,0.2,0.3"  # alpha = eps / 5
# The best er_rar cell sat on the grid's edge (beta 0.1): a finer grid beyond it.
FINE_GRID = "beta_coef=0.02,0.05,0.1;epsilon_fgsm=0.2,0.3,0.5"

# The learning rate with the RAR keys, on the validation split (alpha = eps / 5).
# Online SGD at lr >= 0.2 collapses for some seeds (ER: 0.40 at 0.2) and ACE's loss went NaN
# at 0.3, so the RAR and ACE grids stop at 0.1; ER-RAR's first grid (0.05, 0.1, 0.2) peaked
# at its lower edge.
LR_GRIDS = {
  "er": "learning_rate=0.03,0.05,0.1,0.2,0.3",
  "er_rar": "learning_rate=0.03,0.05,0.1;beta_coef=0.1,0.3;epsilon_fgsm=0.1,0.3",
  "er_ace": "learning_rate=0.02,0.03,0.05,0.1",
  "er_ace_rar": "learning_rate=0.03,0.05,0.1;beta_coef=0.1,0.3;epsilon_fgsm=0.1,0.3",
}
LR_METHODS = tuple(LR_GRIDS)

# A longer tuning at the paper's protocol (the retune stage): what the lr stage left
# untried, on the validation split (10 seeds per cell, 5 attack steps, alpha = epsilon / 5).
GOAL_TUNING = {
  # epsilon past the lr sweep's edge (0.3 was its largest and its best) at the tuned rate
  "goal_tune_er_rar_eps": dict(
    methods="er_rar", sweep="learning_rate=0.05;beta_coef=0.05,0.1,0.2;epsilon_fgsm=0.3,0.5,0.7"
  ),  # the rate as a one-value sweep key, so that the best cell carries it to the test
  # the MixUp variants at a tuned rate
  "goal_tune_er_mix": dict(methods="er_mix", sweep="learning_rate=0.03,0.05,0.1"),
  "goal_tune_er_mix_rar": dict(
    methods="er_mix_rar", sweep="learning_rate=0.05,0.1;beta_coef=0.1,0.3;epsilon_fgsm=0.1,0.3"
  ),
  # tuned at memory 500 itself
  "goal_tune_m500_er": dict(methods="er", mem_size=500, sweep="learning_rate=0.03,0.05,0.1"),
  "goal_tune_m500_er_rar": dict(
    methods="er_rar",
    mem_size=500,
    sweep="learning_rate=0.03,0.05,0.1;beta_coef=0.1,0.3;epsilon_fgsm=0.3,0.5",
  ),
}
# Each test row: (name, method, memory, seeds, the tuning runs its cell is the best of).
GOAL_TESTS = (
  ("test_m200_er_rar_goal_tuned", "er_rar", 200, 20, ["tune_lr_er_rar", "goal_tune_er_rar_eps"]),
  ("test_m200_er_mix_lr_tuned", "er_mix", 200, 20, ["goal_tune_er_mix"]),
  ("test_m200_er_mix_rar_lr_tuned", "er_mix_rar", 200, 20, ["goal_tune_er_mix_rar"]),
  ("test_m500_er_m500_tuned", "er", 500, 10, ["goal_tune_m500_er"]),
  ("test_m500_er_rar_m500_tuned", "er_rar", 500, 10, ["goal_tune_m500_er_rar"]),
)


# Replay rules, each applied to the retune stage's best ER-RAR cell for its memory (which
# the tuning runs named here hold), on the validation split; compare with that cell's row.
VARIANTS = {
  "class_balanced": dict(storage_policy="class_balanced"),
  "whole_buffer": dict(exclude_current_labels=False),
  "no_momentum": dict(decay_factor_fgsm=0.0),
}
# RAR's own internals, never tuned before: the look-ahead step size (both cells
# use lr 0.05, so opt_lr 0.025 / 0.1 / 0.2 is half / twice / four times it), the feature
# space of the neighbour search (the first hidden layer instead of the penultimate one) and
# the weights the attack differentiates (the current ones, as the paper's code does after ASER).
INTERNALS = {
  "opt_lr0.025": dict(opt_lr=0.025),
  "opt_lr0.1": dict(opt_lr=0.1),
  "opt_lr0.2": dict(opt_lr=0.2),
  "first_layer_features": dict(feature_layer="hidden0"),
  "current_attack_params": dict(attack_params="current"),
}
VARIANT_CELLS = {200: ["tune_lr_er_rar", "goal_tune_er_rar_eps"], 500: ["goal_tune_m500_er_rar"]}


def variant_name(mem, variant):
  return f"variant_m{mem}_er_rar_{variant}"


# The nearest-class-mean classifier (eval_classifier=ncm: evaluation only, training
# as before) tuned on validation (10 seeds per cell); then each best cell on the test set, once
# with each classifier (the training is the same, so the two rows pair exactly).
RAR_NCM_GRID = "learning_rate=0.03,0.05,0.1;beta_coef=0.05,0.1,0.3,0.5;epsilon_fgsm=0.3,0.5"
NCM_TUNING = {
  "ncm_tune_er": dict(methods="er", sweep="learning_rate=0.03,0.05,0.1"),
  "ncm_tune_er_rar": dict(methods="er_rar", sweep=RAR_NCM_GRID),
  "ncm_tune_er_ace": dict(methods="er_ace", sweep="learning_rate=0.03,0.05,0.1"),
  "ncm_tune_er_ace_rar": dict(methods="er_ace_rar", sweep=RAR_NCM_GRID),
  "ncm_tune_m500_er": dict(methods="er", mem_size=500, sweep="learning_rate=0.03,0.05,0.1"),
  "ncm_tune_m500_er_rar": dict(methods="er_rar", mem_size=500, sweep=RAR_NCM_GRID),
}


def _test_rows(stage):
  """(memory, method, seeds, the tuning run its cell is the best of) of a stage's
  test rows: memory 200 and 500 with their own cells; then the small
  buffers, where the paper says RAR helps most, with the memory-200 cells."""
  methods = ("er", "er_rar", "er_ace", "er_ace_rar")
  return (
    *((200, method, 20, f"{stage}_tune_{method}") for method in methods),
    *((500, method, 10, f"{stage}_tune_m500_{method}") for method in ("er", "er_rar")),
    *((mem, method, 20, f"{stage}_tune_{method}") for mem in (50, 100) for method in methods),
  )


NCM_TESTS = _test_rows("ncm")


def ncm_test_name(mem, method, classifier):
  return f"ncm_test_m{mem}_{method}_{classifier}"


# A moving average of the weights evaluated in place of the current ones
# (ema_decay: a temporal ensemble, Soutif-Cormerais et al. 2023; training unchanged), output
# layer, tuned on validation with each method's keys (10 seeds per cell); then each best cell on
# the test set twice, with and without the average (the same training: the rows pair exactly).
EMA_DECAYS = "ema_decay=0.9,0.95,0.97,0.98,0.985"
EMA_RAR = "beta_coef=0.05,0.1,0.3;epsilon_fgsm=0.3;" + EMA_DECAYS
EMA_TUNING = {
  "ema_tune_er": dict(methods="er", sweep="learning_rate=0.03,0.05,0.1;" + EMA_DECAYS),
  "ema_tune_er_rar": dict(methods="er_rar", sweep="learning_rate=0.03,0.05;" + EMA_RAR),
  "ema_tune_er_ace": dict(methods="er_ace", sweep="learning_rate=0.03,0.05,0.1;" + EMA_DECAYS),
  "ema_tune_er_ace_rar": dict(methods="er_ace_rar", sweep="learning_rate=0.05,0.1;" + EMA_RAR),
  "ema_tune_m500_er": dict(
    methods="er", mem_size=500, sweep="learning_rate=0.03,0.05,0.1;" + EMA_DECAYS
  ),
  "ema_tune_m500_er_rar": dict(
    methods="er_rar", mem_size=500, sweep="learning_rate=0.03,0.05;" + EMA_RAR
  ),
}
EMA_TESTS = _test_rows("ema")


def ema_test_name(mem, method, weights):
  return f"ema_test_m{mem}_{method}_{weights}"
