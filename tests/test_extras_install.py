"""Each optional extra installs alone into a fresh virtual environment, every module it installs
finds everything it imports (top-level or inside functions), and its CLI answers --help."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# extra -> (packages it makes usable, the CLI module to run)
EXTRAS = {"torch": (("airbench_common", "airbench_torch"), "airbench_torch"),
          "jax": (("airbench_common", "airbench_jax"), "airbench_jax"),
          "onednn": (("airbench_common", "airbench_jax"), "airbench_jax"),
          "parity": (("airbench_common", "airbench_jax", "airbench_torch", "parity"), "parity"),
          "distributed": (("airbench_common", "airbench_jax", "airbench_torch", "parity"),
                          "parity")}
# what only one extra installs: imported by a module its default path never imports
# (parity/study/engine.py, for parity.compare --engine dask)
EXTRA_ONLY = {"distributed": {"distributed"}}


def imported_roots(packages) -> set[str]:
    """Top-level names of every absolute import in these packages' modules, nested ones too."""
    roots = set()
    for pkg in packages:
        for path in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    roots.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names)


def test_imported_roots_sees_nested_imports():
    assert "tqdm" in imported_roots(["airbench_torch"])   # imported inside fit()
    assert "torch" not in imported_roots(["airbench_jax"])
    assert "distributed" in imported_roots(["parity"])    # parity/study/engine.py, inside functions


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_extra_alone_in_a_fresh_venv(extra, tmp_path):
    import platform
    if extra == "onednn" and (sys.platform, platform.machine()) != ("linux", "x86_64"):
        pytest.skip("the oneDNN wheels exist for Linux x86-64 only")
    packages, cli = EXTRAS[extra]
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "-e", f"{REPO}[{extra}]"], check=True,
                   env=env, timeout=1800)
    ours = set(EXTRAS["parity"][0])
    others = set().union(*(v for k, v in EXTRA_ONLY.items() if k != extra))
    wanted = sorted(imported_roots(packages) - ours - others)
    probe = ("import importlib.util, sys; missing = [m for m in sys.argv[1:] "
             "if importlib.util.find_spec(m) is None]; print(' '.join(missing)); "
             "sys.exit(1 if missing else 0)")
    r = subprocess.run([py, "-c", probe, *wanted], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, f"[{extra}] installs none of: {r.stdout.strip()}"
    r = subprocess.run([py, "-m", cli, "--help"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage" in r.stdout.lower()
    if extra == "onednn":   # its wheels' headers and library are found, built and loaded
        r = subprocess.run([py, "-c", "from airbench_jax import onednn; s = onednn.status(); "
                            "print(s); assert s.available, s.reason"], capture_output=True,
                           text=True, env=dict(env, AIRBENCH_JAX_CACHE=str(tmp_path / "cache")),
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
