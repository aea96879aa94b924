import os

# Tests run on the CPU (multi-device tests start subprocesses with their own XLA_FLAGS).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)

# JAX's persistent compilation cache, shared by the pytest workers (`-n 4`): a program that
# several tests build alike compiles once, and a rerun of the suite compiles only what changed.
# The key is the compiled program itself (with JAX's version and flags), so a stale entry
# cannot be used. Every program is kept, the small ones that eager reference code compiles
# too. RAR_JAX_TEST_CACHE= (empty) turns it off.
_CACHE = os.environ.get(
  "RAR_JAX_TEST_CACHE",
  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "xla"),
)
if _CACHE:
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
