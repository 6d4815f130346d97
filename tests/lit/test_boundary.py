"""Lightning only at the edges: the maths, the run layer and inference load without it."""

import subprocess
import sys

import pytest

from tests.helpers.common import REPO

EDGES = ("sae_lab.lit", "sae_lab.cli", "sae_lab.data.sketch", "sae_lab.data.token_datamodule")
"""Modules (and packages) that may import Lightning at import time; callbacks are found by name."""

SCRIPT = """
import importlib, pkgutil, sys
import sae_lab
edges = {edges!r}
names = sorted(m.name for m in pkgutil.walk_packages(sae_lab.__path__, "sae_lab."))
names = [n for n in names if not n.startswith(edges) and not n.endswith(("callback", "callbacks"))
         and n != "sae_lab.__main__"]
def lightning():  # lightning_utilities (torchmetrics needs it) is a small helper package, not Lightning
    return sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
for name in names:
    importlib.import_module(name)
    if lightning():
        sys.exit(f"importing {{name}} imported {{lightning()[0]}}")
from sae_lab.models.classifier_io import load_classifier
load_classifier({ckpt!r})
if lightning():
    sys.exit(f"load_classifier imported {{lightning()[0]}}")
print(len(names))
"""


@pytest.mark.slow
def test_no_module_outside_the_edges_imports_lightning(classifier_ckpt):
    script = SCRIPT.format(edges=EDGES, ckpt=str(classifier_ckpt))
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert int(r.stdout.split()[-1]) > 20  # the walk found the package's modules
