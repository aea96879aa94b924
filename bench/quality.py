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

Every run's files land in bench/results/quality/<name>/ (not committed); its
per-seed numbers are recorded in bench/results/quality/runs_<first word of the
name>.jsonl, which bench/report.py renders from (`_store`); one JSON line per
run goes to stdout and to bench/results/quality.jsonl."""

import argparse
import os

import _quality_stages as plan_run
from _common import cli
from _quality_plan import AVALANCHE, FINE_GRID, INTERNALS, LR_METHODS, PAPER, TUNE_GRID, VARIANTS
from _quality_stages import OUT, done, run, tuned


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
  plan_run.RUN_BATCHING = a.run_batching
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
    plan_run.learning_rate_stage(
      a.skip_done, a.lr_methods.split(","), [int(m) for m in a.lr_memories.split(",")]
    )
  if a.only == "attack_steps":
    plan_run.attack_steps_stage()
  if a.only == "retune":
    plan_run.goal_stage(a.skip_done, a.goal_phase)
  if a.only == "variants":
    plan_run.variant_stage(a.skip_done, VARIANTS)
  if a.only == "internals":
    plan_run.variant_stage(a.skip_done, INTERNALS)
  if a.only == "ncm":
    plan_run.ncm_stage(a.skip_done, a.ncm_phase)
  if "ema" in stages:
    plan_run.ema_stage(a.skip_done, a.ema_phase, [n for n in a.names.split(",") if n])
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
