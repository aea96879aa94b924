"""The runner shell on top of the core: config, run plan, stream loop, hooks,
checkpoints, results and reports. `train.py` parses flags and calls
`rar_jax.runner.experiment.train_and_evaluate`."""
