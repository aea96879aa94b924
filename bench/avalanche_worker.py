"""Avalanche side of bench/avalanche_compare.py: trains Avalanche 0.6's
ReplayPlugin (ER) or RARPlugin on the exact streams rar_jax used (read from an
.npz file) and prints one JSON line. Needs torch and avalanche-lib; installs
nothing. Run it through avalanche_compare.py."""

import json
import sys
import time

import numpy as np


def main(npz_path, plugin_name, mem_size):
  try:
    import torch
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
      create_generic_benchmark_from_tensor_lists,
    )
    from avalanche.benchmarks.scenarios.online import split_online_stream
    from avalanche.training.plugins import EvaluationPlugin, RARPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    from avalanche.training.supervised import Naive
  except ImportError as e:
    print(json.dumps({"skipped": f"avalanche-lib/torch not importable: {e}"}))
    return
  torch.set_num_threads(2)
  d = np.load(npz_path)
  streams, test_x, test_y, task_of_class = d["streams_x"], d["test_x"], d["test_y"], d["task"]
  streams_y = d["streams_y"]
  num_seeds, num_tasks, n = streams_y.shape
  accs, times, steps = [], [], 0
  for s in range(num_seeds):
    torch.manual_seed(s)
    np.random.seed(s)
    model = torch.nn.Sequential(
      torch.nn.Flatten(),
      torch.nn.Linear(784, 400),
      torch.nn.ReLU(),
      torch.nn.Linear(400, 400),
      torch.nn.ReLU(),
      torch.nn.Linear(400, 10),
    )
    if plugin_name == "rar":
      plugin = RARPlugin(
        batch_size_mem=10,
        mem_size=mem_size,
        opt_lr=0.1,
        beta_coef=0.5,
        epsilon_fgsm=0.0314,
        iter_fgsm=2,
      )
    else:
      # Reservoir, as RARPlugin's default and rar_jax's: ReplayPlugin's default
      # ExperienceBalancedBuffer splits memory over experiences, and in an
      # online stream every minibatch is an experience.
      plugin = ReplayPlugin(
        mem_size=mem_size,
        batch_size_mem=10,
        storage_policy=ReservoirSamplingBuffer(max_size=mem_size),
      )
    strategy = Naive(
      model=model,
      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
      criterion=torch.nn.CrossEntropyLoss(),
      train_mb_size=10,
      train_epochs=1,
      eval_mb_size=1000,
      plugins=[plugin],
      evaluator=EvaluationPlugin(loggers=[]),
    )
    bm = create_generic_benchmark_from_tensor_lists(
      train_tensors=[
        [torch.tensor(streams[s, t]), torch.tensor(streams_y[s, t])] for t in range(num_tasks)
      ],
      test_tensors=[[torch.tensor(test_x[:10]), torch.tensor(test_y[:10])]],
      task_labels=[0] * num_tasks,
      complete_test_set_only=True,
    )
    acc = np.zeros((num_tasks, num_tasks))
    tx = torch.tensor(test_x)
    train_time = 0.0
    for t, exp in enumerate(bm.train_stream):
      t0 = time.perf_counter()
      for mb in split_online_stream([exp], experience_size=10, shuffle=False):
        strategy.train(mb)
        steps += 1
      train_time += time.perf_counter() - t0
      model.eval()
      with torch.no_grad():
        pred = model(tx).argmax(-1).numpy()
      model.train()
      task = task_of_class[s][test_y]
      acc[t] = [(pred[task == j] == test_y[task == j]).mean() for j in range(num_tasks)]
    accs.append(acc)
    times.append(train_time)
  accs = np.array(accs)
  print(
    json.dumps({"acc_matrix": accs.tolist(), "train_seconds": float(sum(times)), "steps": steps})
  )


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
