"""Importing cld_lightning.eval does not import the heavy optional dependencies."""

from __future__ import annotations

import os
import subprocess
import sys

import cld_lightning

# Modules the parent package (Lightning, torchmetrics...) may already pull in are not counted:
# only what ``import cld_lightning.eval`` adds on top of ``import cld_lightning``.
CODE = """
import sys
import cld_lightning
before = set(sys.modules)
import cld_lightning.eval as e
assert callable(e.weighted_knn) and callable(e.label_free_metrics)
added = {m.split(".")[0] for m in set(sys.modules) - before}
heavy = ("faiss", "sklearn", "umap", "matplotlib", "rich")
print(sorted(m for m in heavy if m in added))
"""


def test_optional_dependencies_are_lazy():
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(cld_lightning.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
