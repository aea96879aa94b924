"""Accuracy on online Split Fashion-MNIST (real data, offline), as JSON lines.

  python bench/quality.py                 # everything below (~15 min on 2 CPU cores)
  python bench/quality.py --only tune     # one stage: tune | test | ablation | full

Stages:
  tune      RAR hyper-parameters swept on the 5% validation split (memory 200),
            every cell x seeds (10 for er_rar, 5 for er_mix_rar) in one program;
            then a finer er_rar grid past the first grid's best edge. The best
            cell over both is "tuned".
  test      final test accuracy for finetune, er, er_mix, er_rar, er_mix_rar, mir,
            mir_rar at memory 200 (20 seeds) and 500 (10 seeds), RAR with the
            tuned values (read from the tune stage's results) and with the
            paper's MNIST values.
  ablation  ER replaying 20 samples per step (as many as RAR), RAR with
            epsilon 0 (no perturbation), Avalanche's label-targeted attack, and
            Avalanche's defaults (beta 0.5, eps 0.0314, 2 iterations).
  full      all 12000 training samples per task, er and er_rar, 10 seeds.
  lr        (not run by default) the learning rate tuned with RAR's keys on the
            validation split for er, er_rar, er_ace, er_ace_rar (10 seeds per
            cell), then each method's best cell on the test set (20 seeds).
  retune    (not run by default) a longer tuning of the learning rate and RAR's
            keys (GOAL_TUNING: epsilon past the edge, the MixUp variants at a
            tuned rate, memory 500 tuned on itself), then the best cells on the
            test set (GOAL_TESTS).
  variants  (not run by default) replay rules (class-balanced storage, replay
            from the whole buffer, no attack momentum), each at the retune
            stage's best ER-RAR cell for its memory, on the validation split (10
            seeds; the reservoir rows are the tuning runs).
  internals (not run by default) RAR's internals at the same cells, the
            same way: look-ahead step size (opt_lr), the neighbour search's
            feature layer, the weights the attack differentiates.
  ncm       (not run by default) the nearest-class-mean classifier
            (eval_classifier=ncm) tuned on validation for er, er_rar, er_ace,
            er_ace_rar (memory 200) and er, er_rar (memory 500), 10 seeds per
            cell; then each best cell on the test set with both classifiers
            (--ncm_phase tune | test | all).
  ema       (not run by default) a moving average of the weights
            (ema_decay) tuned on validation with each method's keys for er,
            er_rar, er_ace, er_ace_rar (memory 200) and er, er_rar (memory 500);
            then each best cell on the test set with and without the average,
            also at memory 50 and 100 (--ema_phase tune | test | all; --names
            runs only the named runs, e.g. to split the stage over two cores).
  resnet    the reduced ResNet-18 (configs/split_fashion_mnist_resnet.py): er,
            er_rar and er_mix_rar on the test set (--resnet_seeds, default 10),
            with the config's beta_coef, or with --resnet_tune one tuned on the
            validation split first (3 values x 2 seeds); --resnet_beta,
            --resnet_epsilon, --resnet_batch_norm_rows and --resnet_memory set
            those keys (the run's folder name carries the last three);
            --resnet_conv_impl how it convolves. Not run by default:
            about 5 min per seed of er_rar on one core.

Every run's files land in bench/results/quality/<name>/; one JSON line per run
goes to stdout and to bench/results/quality.jsonl.
"""

import argparse
import json
import os

from _common import cli, quiet

from rar_jax.runner import experiment, results
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OUT = os.path.join(ROOT, "bench", "results")
PAPER = dict(beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5)
AVALANCHE = dict(beta_coef=0.5, epsilon_fgsm=0.0314, alpha_fgsm=0.0314 / 2, iter_fgsm=2)
TUNE_GRID = "beta_coef=0.1,0.3,0.5,0.7;epsilon_fgsm=0.05,0.1,0.2,0.3"  # alpha = eps / 5
# The best er_rar cell sat on the grid's edge (beta 0.1): a finer grid beyond it.
FINE_GRID = "beta_coef=0.02,0.05,0.1;epsilon_fgsm=0.2,0.3,0.5"


RUN_BATCHING = "auto"  # set from --run_batching


def base(config_module="split_fashion_mnist", **overrides):
  c = load_file(os.path.join(ROOT, "configs", config_module + ".py"))
  c.update(progress=False, plot=True, overwrite=True, keep_checkpoints=0, run_batching=RUN_BATCHING)
  c.update(overrides)
  return c


def emit(name, result):
  line = {"bench": "quality", "name": name}
  keys = (
    "method",
    "num_seeds",
    "final_avg_accuracy",
    "final_forgetting",
    "overrides",
    "steps",
    "train_seconds",
    "steps_per_second",
    "eval_split",
  )
  line.update({k: result[k] for k in keys if k in result})
  for k in ("final_avg_accuracy", "final_forgetting"):
    if k in line:
      line[k] = {"mean": line[k]["mean"], "se2": line[k]["se2"]}
  if len(result.get("cells", ())) > 1:
    line["best_cell"] = result["best_cell"]
    line["cells"] = [
      {
        "overrides": c["overrides"],
        "final_avg_accuracy": c["final_avg_accuracy"]["mean"],
        "se2": c["final_avg_accuracy"]["se2"],
        "diverged_seeds": c.get("diverged_seeds", []),
      }
      for c in result["cells"]
    ]
  print(json.dumps(line), flush=True)
  with open(os.path.join(OUT, "quality.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")


def run(name, config_module="split_fashion_mnist", **overrides):
  config = base(config_module, **overrides)
  result = quiet(experiment.train_and_evaluate)(config, os.path.join(OUT, "quality", name))
  for r in result.values():
    emit(name, r)
  return result


def done(name):
  """Whether the run ``name`` finished (its metrics.json exists)."""
  return os.path.exists(os.path.join(OUT, "quality", name, "metrics.json"))


def tuned(method, names=None):
  """The best cell by validation accuracy over the method's tuning runs."""
  cells = []
  for name in names or (f"tune_{method}", f"tune_fine_{method}"):
    path = os.path.join(OUT, "quality", name, "metrics.json")
    if os.path.exists(path):
      with open(path) as f:
        cells += json.load(f)["cells"]
  if not cells:
    raise SystemExit(f"run the tune stage first (no tuning results for {method})")
  return max(cells, key=results.rank)["overrides"]


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


def learning_rate_stage(skip_done, methods=LR_METHODS, memories=(200,)):
  """Tunes the learning rate (with RAR's keys) for ER, ER-RAR, ER-ACE and
  ER-ACE-RAR on the validation split (10 seeds per cell, memory 200), then runs
  each method's best cell on the test set: 20 seeds at memory 200, 10 at 500."""
  for method in methods:
    name = f"tune_lr_{method}"
    if skip_done and done(name):
      continue
    run(
      name,
      methods=method,
      eval_split="validation",
      num_seeds=10,
      iter_fgsm=5,
      alpha_fgsm=None,
      sweep=LR_GRIDS[method],
    )
  for mem in memories:
    for method in methods:
      name = "_".join(["test", f"m{mem}", method, "lr_tuned"])
      if skip_done and done(name):
        continue
      run(
        name,
        methods=method,
        mem_size=mem,
        num_seeds=20 if mem == 200 else 10,
        iter_fgsm=5,
        alpha_fgsm=None,
        **tuned(method, [f"tune_lr_{method}"]),
      )


def attack_steps_stage():
  """ER-RAR's attack steps at the tuned learning rate, beta and epsilon (alpha =
  epsilon / iter_fgsm per step, as in the tuning): validation, 10 seeds per
  cell; the best cell on the test set if it is not 5 steps. Exploratory: the
  best cell is taken as is, even when its validation margin is inside the noise."""
  best = tuned("er_rar", ["tune_lr_er_rar"])
  run(
    "tune_attack_steps_er_rar",
    methods="er_rar",
    eval_split="validation",
    num_seeds=10,
    alpha_fgsm=None,
    sweep="iter_fgsm=2,5,10",
    **best,
  )
  steps = tuned("er_rar", ["tune_attack_steps_er_rar"])["iter_fgsm"]
  if steps != 5:
    run(
      "test_m200_er_rar_attack_steps_tuned",
      methods="er_rar",
      num_seeds=20,
      alpha_fgsm=None,
      iter_fgsm=steps,
      **best,
    )


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


def variant_stage(skip_done, variants):
  """Each of ``variants`` at the retune stage's best ER-RAR cell for each memory, on the
  validation split, 10 seeds (paired with the tuning runs' row of that cell)."""
  for mem, names in VARIANT_CELLS.items():
    cell = tuned("er_rar", names)
    sweep = ";".join(f"{k}={v}" for k, v in cell.items())  # carries the cell to the results
    for variant, overrides in variants.items():
      name = variant_name(mem, variant)
      if not (skip_done and done(name)):
        run(
          name,
          methods="er_rar",
          mem_size=mem,
          eval_split="validation",
          num_seeds=10,
          iter_fgsm=5,
          alpha_fgsm=None,
          sweep=sweep,
          **overrides,
        )


def goal_stage(skip_done, phase="all"):
  """The longer tuning (``GOAL_TUNING``), then each row of ``GOAL_TESTS`` on
  the test set with its best validation cell (``phase``: tune | test | all)."""
  common = dict(eval_split="validation", num_seeds=10, iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in GOAL_TUNING.items():
      if not (skip_done and done(name)):
        run(name, **common, **overrides)
  if phase in ("test", "all"):
    for name, method, mem, seeds, names in GOAL_TESTS:
      if not (skip_done and done(name)):
        best = tuned(method, names)
        run(
          name, methods=method, mem_size=mem, num_seeds=seeds, iter_fgsm=5, alpha_fgsm=None, **best
        )


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


def ncm_stage(skip_done, phase="all"):
  """``NCM_TUNING`` with the NCM classifier on the validation split,
  then each ``NCM_TESTS`` row on the test set with both classifiers."""
  common = dict(iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in NCM_TUNING.items():
      if not (skip_done and done(name)):
        run(
          name,
          eval_classifier="ncm",
          eval_split="validation",
          num_seeds=10,
          **common,
          **overrides,
        )
  if phase in ("test", "all"):
    for mem, method, seeds, tuning in NCM_TESTS:
      best = tuned(method, [tuning])
      for classifier in ("ncm", "head"):
        name = ncm_test_name(mem, method, classifier)
        if not (skip_done and done(name)):
          run(
            name,
            methods=method,
            mem_size=mem,
            num_seeds=seeds,
            eval_classifier=classifier,
            **common,
            **best,
          )


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


def ema_stage(skip_done, phase="all", names=None):
  """``EMA_TUNING`` on the validation split (``names``: only those
  runs), then each ``EMA_TESTS`` row on the test set with the averaged weights
  ("ema") and with the current ones ("plain": the same cell at ema_decay 0)."""
  common = dict(iter_fgsm=5, alpha_fgsm=None)
  if phase in ("tune", "all"):
    for name, overrides in EMA_TUNING.items():
      if names and name not in names or skip_done and done(name):
        continue
      run(name, eval_split="validation", num_seeds=10, **common, **overrides)
  if phase in ("test", "all"):
    for mem, method, seeds, tuning in EMA_TESTS:
      for weights in ("ema", "plain"):
        name = ema_test_name(mem, method, weights)
        if names and name not in names or skip_done and done(name):
          continue
        best = tuned(method, [tuning])
        keys = dict(best, ema_decay=best["ema_decay"] if weights == "ema" else 0.0)
        run(name, methods=method, mem_size=mem, num_seeds=seeds, **common, **keys)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--only",
    choices=(
      "tune",
      "test",
      "ablation",
      "full",
      "resnet",
      "lr",
      "attack_steps",
      "retune",
      "variants",
      "internals",
      "ncm",
      "ema",
    ),
    default=None,
  )
  p.add_argument("--resnet_seeds", type=int, default=10)
  p.add_argument("--lr_methods", default=",".join(LR_METHODS), help="methods of the lr stage")
  p.add_argument("--lr_memories", default="200", help="memory sizes of the lr stage's test runs")
  p.add_argument("--resnet_methods", default="er,er_rar,er_mix_rar")
  p.add_argument(
    "--resnet_batch_norm_rows",
    default="group",
    choices=("group", "joint"),
    help="see docs/config.md",
  )
  p.add_argument(
    "--resnet_beta", type=float, default=None, help="beta_coef instead of --resnet_tune's"
  )
  p.add_argument(
    "--resnet_epsilon",
    type=float,
    default=None,
    help="epsilon_fgsm instead of the config's (alpha = epsilon / iter_fgsm)",
  )
  p.add_argument(
    "--resnet_memory", type=int, default=None, help="mem_size instead of the config's (200)"
  )
  p.add_argument(
    "--resnet_conv_impl",
    default="auto",
    choices=("auto", "xla", "im2col"),
    help="conv_impl (docs/execution.md); im2col reproduces RAR rows of the earlier CPU execution",
  )
  p.add_argument(
    "--resnet_tune",
    action="store_true",
    help="tune beta_coef on the validation split first (else the config's)",
  )
  p.add_argument("--goal_phase", default="all", choices=("tune", "test", "all"))
  p.add_argument(
    "--ncm_phase", default="all", choices=("tune", "test", "all"), help="of the ncm stage"
  )
  p.add_argument(
    "--ema_phase", default="all", choices=("tune", "test", "all"), help="of the ema stage"
  )
  p.add_argument("--names", default="", help="ema stage: only these runs (comma-separated)")
  p.add_argument("--skip_done", action="store_true", help="skip tuning runs already done")
  p.add_argument(
    "--run_batching", default="auto", help="auto | vmap | map (see docs/reproducibility.md)"
  )
  a = p.parse_args()
  global RUN_BATCHING
  RUN_BATCHING = a.run_batching
  os.makedirs(OUT, exist_ok=True)
  stages = [a.only] if a.only else ["tune", "test", "ablation", "full"]
  if "tune" in stages:
    # 16 cells x seeds in one program; on the CPU this is memory-bound (every
    # run reads its own weights), so the MixUp variant is tuned on 5 seeds.
    for method, seeds in (("er_rar", 10), ("er_mix_rar", 5)):
      if a.skip_done and done(f"tune_{method}"):
        continue
      run(
        f"tune_{method}",
        methods=method,
        eval_split="validation",
        num_seeds=seeds,
        iter_fgsm=5,
        alpha_fgsm=None,
        sweep=TUNE_GRID,
      )
    if not (a.skip_done and done("tune_fine_er_rar")):
      run(
        "tune_fine_er_rar",
        methods="er_rar",
        eval_split="validation",
        num_seeds=10,
        iter_fgsm=5,
        alpha_fgsm=None,
        sweep=FINE_GRID,
      )
  if "test" in stages:
    for mem, seeds in ((200, 20), (500, 10)):
      run(f"test_m{mem}_baselines", methods="finetune,er,er_mix,mir", mem_size=mem, num_seeds=seeds)
      for method in ("er_rar", "er_mix_rar", "mir_rar"):
        best = tuned("er_mix_rar" if "mix" in method else "er_rar")
        run(
          f"test_m{mem}_{method}_tuned",
          methods=method,
          mem_size=mem,
          num_seeds=seeds,
          iter_fgsm=5,
          alpha_fgsm=None,
          **best,
        )
      run(
        f"test_m{mem}_rar_paper_hp",
        methods="er_rar,er_mix_rar",
        mem_size=mem,
        num_seeds=seeds,
        **PAPER,
      )
  if "ablation" in stages:
    best = tuned("er_rar")
    run("ablation_er_20_replayed", methods="er", batch_size_mem=20, num_seeds=20)
    run(
      "ablation_er_rar_eps0",
      methods="er_rar",
      num_seeds=20,
      iter_fgsm=5,
      alpha_fgsm=None,
      **dict(best, epsilon_fgsm=0.0),
    )
    run(
      "ablation_er_rar_label_target",
      methods="er_rar",
      num_seeds=20,
      attack_target="label",
      iter_fgsm=5,
      alpha_fgsm=None,
      **best,
    )
    run("ablation_er_rar_avalanche_hp", methods="er_rar", num_seeds=20, **AVALANCHE)
  if a.only == "lr":
    learning_rate_stage(
      a.skip_done, a.lr_methods.split(","), [int(m) for m in a.lr_memories.split(",")]
    )
  if a.only == "attack_steps":
    attack_steps_stage()
  if a.only == "retune":
    goal_stage(a.skip_done, a.goal_phase)
  if a.only == "variants":
    variant_stage(a.skip_done, VARIANTS)
  if a.only == "internals":
    variant_stage(a.skip_done, INTERNALS)
  if a.only == "ncm":
    ncm_stage(a.skip_done, a.ncm_phase)
  if "ema" in stages:
    ema_stage(a.skip_done, a.ema_phase, [n for n in a.names.split(",") if n])
  if a.only == "resnet":
    # Long runs: checkpoints kept, so rerunning the stage resumes where it stopped.
    resnet = dict(
      config_module="split_fashion_mnist_resnet",
      keep_checkpoints=1,
      overwrite=False,
      batch_norm_rows=a.resnet_batch_norm_rows,
      conv_impl=a.resnet_conv_impl,
    )
    suffix = "" if a.resnet_batch_norm_rows == "group" else f"_bn_{a.resnet_batch_norm_rows}"
    if a.resnet_epsilon is not None:
      resnet.update(epsilon_fgsm=a.resnet_epsilon, alpha_fgsm=None)
      suffix += f"_eps{a.resnet_epsilon:g}"
    if a.resnet_memory is not None:
      resnet.update(mem_size=a.resnet_memory)
      suffix += f"_m{a.resnet_memory}"
    best = {}
    if a.resnet_tune:
      if not (a.skip_done and done("resnet_tune_er_rar")):
        run(
          "resnet_tune_er_rar",
          methods="er_rar",
          eval_split="validation",
          num_seeds=2,
          sweep="beta_coef=0.1,0.3,0.5",
          **resnet,
        )
      best = tuned("er_rar", ["resnet_tune_er_rar"])
    if a.resnet_beta is not None:
      best = {"beta_coef": a.resnet_beta}
    # One folder per method, so methods can run as separate processes (one per core).
    for method in a.resnet_methods.split(","):
      run(
        f"resnet_test_s{a.resnet_seeds}{suffix}/{method}",
        methods=method,
        num_seeds=a.resnet_seeds,
        **best,
        **resnet,
      )
  if "full" in stages:
    best = tuned("er_rar")
    run("full_stream_er", methods="er", samples_per_task=0, num_seeds=10)
    run(
      "full_stream_er_rar",
      methods="er_rar",
      samples_per_task=0,
      num_seeds=10,
      iter_fgsm=5,
      alpha_fgsm=None,
      **best,
    )


if __name__ == "__main__":
  cli(main)
