"""The pure replay core: buffer, neighbours, attack, MixUp, retrieval, stages
and the step. Pure functions over explicit state; it never imports data
loading, I/O, the runner or the CLI (tests/test_architecture.py)."""
