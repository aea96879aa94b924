"""Renders the results tables (docs/tables/results_tables.md, included by
docs/results.md) and the comparison figure from the per-seed records in bench/results/.

  python bench/report.py                                  # Markdown on stdout
  python bench/report.py --out docs/tables/results_tables.md --figure docs/_static/comparison.png \
      --paper_code_out docs/tables/paper_code.md

Runs from any directory. Quality rows read bench/results/quality/runs_*.jsonl and
bench/results/mix_rar/runs_*.jsonl (each method folder's config and per-seed
metrics, for paired differences; `_store`); speed rows read
bench/results/speed.jsonl; NCM re-evaluations bench/results/ncm_checkpoints.jsonl;
the tables against the paper's code bench/results/paper_code_*.jsonl, each table one
file (one session of bench/paper_code_step_time.py: both systems in the same run).
`--sensitivity DIR` also draws the beta x epsilon heat map of every sweep over both.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the helpers beside it

from _quality_plan import INTERNALS  # noqa: E402
from _quality_tables import (  # noqa: E402
  comparison_figure,
  goals_table,
  learning_rate_table,
  mix_rar_table,
  quality_tables,
  summary_table,
)
from _resnet_tables import (  # noqa: E402
  ncm_checkpoint_table,
  resnet_memory_table,
  resnet_screen_table,
  resnet_table,
)
from _speed_tables import paper_code_tables, speed_tables  # noqa: E402
from _tables import Runs  # noqa: E402
from _tuning_tables import (  # noqa: E402
  ema_table,
  ema_tuning_table,
  ncm_table,
  sensitivity_pictures,
  tuning_tables,
  variants_table,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_metrics():
  """{(run name, method): metrics} of every recorded quality run."""
  return Runs("quality")


def render(m, pictures=""):
  """Every table, as Markdown."""
  text = (
    "## Quality\n\n**Summary: methods by memory size** (test split, output layer, "
    "20 seeds; 10 at memory 500)\n\n"
    + summary_table(m)
    + "\n"
    + quality_tables(m)
    + "\n"
    + learning_rate_table(m)
    + "\n"
    + goals_table(m)
    + "\n"
    + mix_rar_table()
    + "\n"
    + resnet_table(m)
    + "\n"
    + resnet_memory_table(m)
    + "\n"
    + resnet_screen_table(m)
    + "\n\n## Tuning\n"
    + variants_table(m)
    + "\n"
    + variants_table(m, INTERNALS, "RAR's internals at the best ER-RAR cell")
    + "\n"
    + ncm_table(m)
    + "\n"
    + ncm_checkpoint_table()
    + "\n"
    + ema_tuning_table(m)
    + "\n"
    + ema_table(m)
    + "\n"
    + tuning_tables(m)
  )
  if pictures:
    text += "\n\nSensitivity heat maps: " + ", ".join(
      f"`{p}`" for p in sensitivity_pictures(m, pictures)
    )
  return text + "\n\n## Speed\n" + speed_tables() + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="", help="write the Markdown here (default: stdout)")
  p.add_argument("--figure", default="", help="also draw the comparison figure (a PNG path)")
  p.add_argument("--sensitivity", default="", help="also draw the heat maps into this folder")
  p.add_argument(
    "--paper_code_out",
    default="",
    help="also write the speed tables against the paper's code here (one per session file)",
  )
  a = p.parse_args()
  m = load_metrics()
  text = render(m, a.sensitivity)
  if a.out:
    header = (
      "<!-- Rendered by `python bench/report.py --out "
      f"{os.path.relpath(os.path.abspath(a.out), ROOT)}` from bench/results/; do not edit. -->\n\n"
    )
    with open(a.out, "w") as f:
      f.write(header + text)
  else:
    print(text)
  if a.figure:
    comparison_figure(m, a.figure)
  if a.paper_code_out:
    with open(a.paper_code_out, "w") as f:
      f.write(
        "<!-- Rendered by `python bench/report.py --paper_code_out "
        f"{os.path.relpath(os.path.abspath(a.paper_code_out), ROOT)}` from "
        "bench/results/paper_code_*.jsonl; do not edit. -->\n" + paper_code_tables()
      )


if __name__ == "__main__":
  main()
