"""airbench_common.env: what a record says about the software and the machine."""
import importlib.metadata as md
import platform

from airbench_common import env


def test_package_versions():
    v = env.package_versions("numpy", "no-such-package-xyz")
    assert v["python"] == platform.python_version() and v["numpy"] == md.version("numpy")
    assert v["no-such-package-xyz"] == "not installed" and set(v) == {"python", "numpy",
                                                                      "no-such-package-xyz"}


def test_cpu_model_reads_proc_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU @ 1GHz \nflags\t: x\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/cpuinfo" else p, *a, **k))
    assert env.cpu_model() == "Test CPU @ 1GHz"


def test_cpu_model_without_proc(monkeypatch):
    def missing(p, *a, **k):
        raise OSError(2, "No such file")
    monkeypatch.setattr("builtins.open", missing)
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert env.cpu_model() == platform.machine()
    monkeypatch.setattr(platform, "processor", lambda: "proc")
    assert env.cpu_model() == "proc"


def test_machine_info(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    m = env.machine_info()
    assert m["host"] == platform.node() and m["platform"] == platform.platform()
    assert m["cpu"] == env.cpu_model() and m["cpu_count"] >= 1
    assert m["env"]["OMP_NUM_THREADS"] == "3" and "XLA_FLAGS" not in m["env"]


def test_records_say_which_code_made_them(tmp_path):
    """A record names the git commit of the source tree that produced it (+dirty if modified)."""
    import re
    from airbench_common.env import code_version
    from airbench_common.records import make_record
    v = code_version()
    assert v == "unknown" or re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", v), v
    rec = make_record(recipe="airbench94", overrides={}, seed=0, framework="jax", versions={},
                      device="cpu", dtype="float32", flags={}, acc=0.5, acc_tta=0.5, tta_level=2,
                      train_seconds=1.0, eval_seconds=1.0, steps=1)
    assert rec["code"] == v
