import os

# Tests run on the CPU, 8 host devices so sharding code can be exercised.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
