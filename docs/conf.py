"""Sphinx configuration for rar_jax's documentation (MyST Markdown, API pages from docstrings).

Build: `sphinx-build -W --keep-going -b html docs docs/_build/html` (README, "Documentation").
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "rar_jax"
author = "rar_jax authors"
copyright = "2026, rar_jax authors"

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "rar_docs",  # docs/_ext/rar_docs.py: the config reference and the API pages, generated
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "tables", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings write code in single backticks.
default_role = "code"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Modules rar_jax imports only on demand (TFDS); the API pages must build without them.
autodoc_mock_imports = ["tensorflow", "tensorflow_datasets"]

html_theme = "furo"
html_title = "rar_jax"
html_static_path: list = []
