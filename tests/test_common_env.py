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


def _fake_cpuinfo(monkeypatch, tmp_path, text):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/cpuinfo" else p, *a, **k))


def test_cpu_flags_of_interest_in_a_fixed_order(tmp_path, monkeypatch):
    every = "avx2 fma avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16 amx_int8"
    _fake_cpuinfo(monkeypatch, tmp_path, "processor\t: 0\nmodel name\t: X\n"
                  "flags\t\t: fpu amx_int8 sse avx512_bf16 avx2 fma avx512fx\n"
                  "flags\t\t: avx512f\n")      # only the first flags line counts
    assert env.cpu_flags_of_interest() == ["avx2", "fma", "avx512_bf16", "amx_int8"]
    _fake_cpuinfo(monkeypatch, tmp_path, f"flags: {' '.join(reversed(every.split()))}\n")
    assert env.cpu_flags_of_interest() == every.split()
    _fake_cpuinfo(monkeypatch, tmp_path, "processor: 0\n")
    assert env.cpu_flags_of_interest() == []


def test_cpu_flags_without_proc(monkeypatch):
    def missing(p, *a, **k):
        raise OSError(2, "No such file")
    monkeypatch.setattr("builtins.open", missing)
    assert env.cpu_flags_of_interest() == []


def test_device_vocabulary_is_shared(monkeypatch):
    """Both frameworks name a device the same way in records: PyTorch's 'cuda:N' for a GPU."""
    monkeypatch.setattr(env, "cpu_model", lambda: "Test CPU")
    assert env.device_fields("cpu", 0, None) == ("cpu", "Test CPU")
    assert env.device_fields("CPU", None, "ignored") == ("cpu", "Test CPU")
    assert env.device_fields("gpu", 0, "NVIDIA H200") == ("cuda:0", "NVIDIA H200")   # JAX's name
    assert env.device_fields("cuda", 1, "NVIDIA H100") == ("cuda:1", "NVIDIA H100")  # PyTorch's
    assert env.device_fields("ROCm", 2, "MI300X") == ("cuda:2", "MI300X")
    assert env.device_fields("tpu", None, "v5e") == ("tpu:0", "v5e")
    assert env.device_fields("Gpu", 3.0, None) == ("cuda:3", "unknown")
    assert env.device_fields("gpu", 1, "") == ("cuda:1", "unknown")


def test_code_version_names_the_commit_and_a_dirty_tree(tmp_path, monkeypatch):
    """In a git checkout: the 12-digit commit, '+dirty' once a tracked file changes (untracked
    files do not count); outside one: 'unknown'."""
    import subprocess
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "env.py").write_text("# tracked\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "pkg/env.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setattr(env, "__file__", str(repo / "pkg" / "env.py"))
    assert env.code_version() == head[:12]
    (repo / "untracked.txt").write_text("x")
    assert env.code_version() == head[:12]
    (repo / "pkg" / "env.py").write_text("# changed\n")
    assert env.code_version() == head[:12] + "+dirty"
    monkeypatch.setattr(env, "__file__", str(tmp_path / "elsewhere" / "pkg" / "env.py"))
    assert env.code_version() == "unknown"
