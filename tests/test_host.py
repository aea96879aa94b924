"""`rar_jax.runner.host`: process-level settings."""

import platform

import pytest

from rar_jax.runner import host


def test_a_users_malloc_top_pad_wins(monkeypatch):
  monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
  assert host.keep_freed_memory() is False


@pytest.mark.skipif(
  platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_accepts_the_padding(monkeypatch):
  monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
  assert host.keep_freed_memory() is True
