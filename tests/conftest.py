import os

# Tests run on the CPU (multi-device tests start subprocesses with their own XLA_FLAGS).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
