"""The package as users load it: from a plain checkout as well as installed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the child drops the editable install's import hook, so only PYTHONPATH can find the package
_CHECKOUT = """
import sys
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
import jaximpute
import jaximpute.kernels.sampler as sampler
import jaximpute.cli
print(jaximpute.__file__)
print(sampler.__file__)
"""


def test_a_plain_checkout_imports_the_kernels(tmp_path):
    """`PYTHONPATH=<checkout> python -m jaximpute.cli` works without installing: the kernels
    (the repository's kernels/ folder) load as jaximpute.kernels from the checkout itself."""
    r = subprocess.run([sys.executable, "-c", _CHECKOUT], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    pkg, kern = r.stdout.split()
    assert Path(pkg) == ROOT / "jaximpute" / "__init__.py"
    assert Path(kern) == ROOT / "kernels" / "sampler.py"


def test_one_version_number():
    """The version the package reports is pyproject.toml's."""
    import jaximpute
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("version"))
    assert jaximpute.__version__ == line.split("=")[1].strip().strip('"')
