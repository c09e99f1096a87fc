"""Run the hostile-user cases of docs/FAULTS.md against this tree and write one JSON line per case.

    python benchmarks/fault_table.py --out faults.jsonl                 # every case (~20 min, CPU)
    python benchmarks/fault_table.py --out faults.jsonl --only compare  # one group: cli, compare, api, parity, native, library

Each line is [case, surface, result], result "EXIT[ TB]: first stderr line" (TB: a traceback was
printed; then the line shown is the traceback's last). A case with a property to check beyond the
exit status (record statuses, counts, duplicates) appends "| check: ..." with what was read back.
Every case trains on 64 random images at widths 4,8,8 for one epoch, so each takes seconds.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fault_cases import API, API_CHECKPOINTS, CLI_CASES, LIBRARY, NATIVE_USE, PARITY_CASES

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SMALL = ["--set", "widths=4,8,8", "--set", "batch_size=16", "--set", "whiten_images=16"]


def env():
    e = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "AIRBENCH_CIFAR10_URL": "file:///nonexistent/x.tar.gz"}
    e.pop("AIRBENCH_DATA", None)
    return e


def summarise(p):
    lines = [l for l in p.stderr.splitlines() if l.strip() and "warn" not in l.lower()]
    tb = "Traceback" in p.stderr
    errors = [l for l in lines if l.startswith("error:")]  # past a progress bar's lines
    first = (lines[-1] if tb else (errors or lines or [""])[0])[:150]
    more = f" ({len(lines)} lines)" if len(lines) > 1 and not tb else ""
    return f"{p.returncode}{' TB' if tb else ''}{more}: {first}"


def run(args, timeout=600):
    try:
        return subprocess.run([PY, *args], capture_output=True, text=True, env=env(), cwd=tempfile.gettempdir(),
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(args, 124, "", f"timeout after {timeout} s")


def scratch(w):
    """The folders and files the cases point at."""
    rng = np.random.default_rng(0)
    for name, data in (("tiny", True), ("tiny2", True), ("corrupt", False)):
        (w / name).mkdir()
        for split, n in (("train", 64), ("test", 32)):
            if data:
                seed_shift = 1 if name == "tiny2" else 0
                r = np.random.default_rng(seed_shift)
                np.savez(w / name / f"{split}.npz", images=r.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                         labels=r.integers(0, 10, n).astype(np.uint8))
    (w / "corrupt" / "train.npz").write_bytes(b"PK\x03\x04 not a zip")
    (w / "empty").mkdir()
    (w / "adir").mkdir()
    (w / "ro").mkdir()  # a read-only mount (chmod alone does not stop root)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(w / "ro")],
                      capture_output=True).returncode:
        (w / "ro").chmod(0o555)
    (w / "afile").write_text("x")


def cli_cases(w, emit):
    for name, extra in CLI_CASES:
        extra = [a.replace("{w}", str(w)) for a in extra]
        keys = {a.split("=")[0] for a in extra if "=" in a}
        base = [a for pair in zip(SMALL[::2], SMALL[1::2]) if pair[1].split("=")[0] not in keys for a in pair]
        if "--epochs" not in extra:
            base += ["--epochs", "1"]
        if "--data-dir" not in extra:
            base += ["--data-dir", str(w / "tiny")]
        if "--out" not in extra:
            base += ["--out", str(w / "cli_out.jsonl")]
        for cli in ("airbench_jax", "airbench_torch"):
            p = run(["-m", cli, *base, *extra])
            res = summarise(p)
            if name.startswith("--set lr=1e6") and p.returncode == 0:
                recs = [json.loads(l) for l in open(w / "cli_out.jsonl")]
                last = recs[-1]
                res += f" | check: status={last.get('status')!r}"
            emit(name, cli, res)


def compare(w, out, *extra, data="tiny", runs="2"):
    args = ["-m", "parity.compare", "--preset", "smoke", "--no-progress", "--no-plots", "--out", str(out)]
    if data:
        args += ["--data-dir", str(w / data)]
    return run([*args, *SMALL, "--set", "epochs=1", *(["--runs", runs] if runs else []), *extra])


def n_records(out):
    return sum(1 for l in open(out / "runs.jsonl") if l.strip())


def compare_cases(w, emit):
    c = "parity.compare"
    emit("--runs 0", c, summarise(compare(w, w / "c0", runs="0")))
    emit("--runs -5", c, summarise(compare(w, w / "c1", runs="-5")))
    emit("--set n_train=0 (no --n-train option)", c, summarise(compare(w, w / "c2", "--set", "n_train=0")))
    emit("--set n_train=-5", c, summarise(compare(w, w / "c3", "--set", "n_train=-5")))
    for m in ("inf", "-1", "nan", "0"):
        emit(f"--margin {m}", c, summarise(compare(w, w / f"cm{m}", "--margin", m)))
    base = w / "base"
    p = compare(w, base, runs="2")
    emit("a good compare, --runs 2 (the base for what follows)", c,
         summarise(p) + f" | check: {n_records(base)} records")
    for m in ("inf", "-1", "nan"):
        emit(f"--report DIR --margin {m}", c, summarise(run(["-m", "parity.compare", "--report", str(base),
                                                                 "--margin", m, "--no-plots"])))
    # resume with fewer runs: reports the first N
    r1 = w / "r1"
    shutil.copytree(base, r1)
    p = compare(w, r1, "--resume", runs="1")
    rep = json.loads((r1 / "report.json").read_text())
    emit("--resume with fewer --runs (1 of 2)", c,
         summarise(p) + f" | check: report counts {json.dumps(rep['counts'])[:80]}, sequential n {rep['sequential']['n']}, "
         f"{n_records(r1)} records kept")
    r2 = w / "r2"
    shutil.copytree(base, r2)
    emit("--resume with another --data-dir", c, summarise(compare(w, r2, "--resume", data="tiny2")))
    emit("--resume with another --set", c, summarise(compare(w, r2, "--resume", "--set", "muon_lr=0.1")))
    r3 = w / "r3"
    shutil.copytree(base, r3)
    (r3 / "config.json").write_text("{not json")
    emit("corrupt config.json, --resume", c, summarise(compare(w, r3, "--resume")))
    emit("corrupt config.json, --report DIR", c, summarise(run(["-m", "parity.compare", "--report", str(r3),
                                                               "--no-plots"])))
    # a record written by the plain CLI, appended to a compare's runs.jsonl
    r4 = w / "r4"
    shutil.copytree(base, r4)
    plain = w / "plain.jsonl"
    run(["-m", "airbench_jax", "--data-dir", str(w / "tiny"), *SMALL, "--epochs", "1", "--seed", "5",
         "--out", str(plain), "--quiet"])
    with open(r4 / "runs.jsonl", "a") as f:
        f.write(plain.read_text())
    p = run(["-m", "parity.compare", "--report", str(r4), "--no-plots"])
    warned = [x for x in json.loads((r4 / "report.json").read_text()).get("warnings", []) if "left out" in x]
    emit("plain-CLI record in runs.jsonl, --report DIR", c, summarise(p) + " | check: "
         + (f"report.json warns: {warned[0][:70]}" if warned else "FAILED: no warning about the foreign record"))
    # two compares on one --out at once
    r5 = w / "r5"
    first = subprocess.Popen([PY, "-m", "parity.compare", "--preset", "smoke", "--no-progress", "--no-plots",
                              "--out", str(r5), "--data-dir", str(w / "tiny"), *SMALL, "--set", "epochs=1",
                              "--runs", "3"], env=env(), cwd=tempfile.gettempdir(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):  # wait until the first holds the lock (its runs.jsonl exists)
        if (r5 / "runs.jsonl").exists():
            break
        time.sleep(0.1)
    p = compare(w, r5, runs="3")
    emit("two compares on one --out at once (second)", c,
         summarise(p) + f" | check: names first pid {first.pid}: {str(first.pid) in p.stderr}")
    # kill -9 mid-compare, then --resume
    first.wait()
    r6 = w / "r6"
    k = subprocess.Popen([PY, "-m", "parity.compare", "--preset", "smoke", "--no-progress", "--no-plots",
                          "--out", str(r6), "--data-dir", str(w / "tiny"), *SMALL, "--set", "epochs=1",
                          "--runs", "3"], env=env(), cwd=tempfile.gettempdir(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while k.poll() is None and not ((r6 / "runs.jsonl").exists() and n_records(r6) >= 2):
        time.sleep(0.1)
    k.send_signal(signal.SIGKILL)
    k.wait()
    before = n_records(r6)
    p = compare(w, r6, "--resume", runs="3")
    keys = [(r["framework"], r["seed"]) for r in map(json.loads, filter(str.strip, open(r6 / "runs.jsonl")))]
    emit("kill -9 after 2 runs, then --resume", c, summarise(p) + f" | check: {before} kept, "
         f"{len(keys)} after resume, duplicates: {len(keys) - len(set(keys))}")
    # collapse: airbench94_muon (compare's default) does not read lr, so that is refused; its own rates
    emit("--set lr=1e6 (collapse)", c, summarise(compare(w, w / "r7", "--set", "lr=1e6")))
    r8 = w / "r8"
    p = compare(w, r8, "--set", "muon_lr=1e6", "--set", "head_lr=1e6", "--set", "bias_lr=1e6")
    statuses = [r.get("status") for r in map(json.loads, filter(str.strip, open(r8 / "runs.jsonl")))]
    emit("--set muon_lr=head_lr=bias_lr=1e6 (collapse)", c, summarise(p) + f" | check: statuses {statuses}")
    emit("--out in a read-only dir", c, summarise(compare(w, w / "ro" / "c")))
    emit("--out names a file", c, summarise(compare(w, w / "afile")))
    for a in (["--shard", "3/2"], ["--shard", "x"], ["--jax-vmap", "0"], ["--frameworks", "jax,tf"],
              ["--engine", "dask", "--scheduler", "bogus"], ["--recipe", "nope"]):
        emit(" ".join(a), c, summarise(compare(w, w / "cx", *a)))
    g = "parity.gpu_check"
    g_out = ["--out", str(w / "g0")]
    for a in (["--dry-run"], [*g_out, "--budget-minutes", "-1"], [*g_out, "--budget-minutes", "nan"],
              [*g_out, "--max-pairs", "0"], [*g_out, "--stages", "bogus"], ["--subset", str(w / "afile"), "--out", str(w / "g1")],
              ["--make-subset", str(w / "s.npz"), "--train", "0", "--data-dir", str(w / "tiny")],
              ["--make-subset", str(w / "s.npz"), "--train", "-5", "--data-dir", str(w / "tiny")],
              ["--out", str(w / "ro" / "g")]):
        emit(" ".join(a).replace(str(w), "W"), g, summarise(run(["-m", g, *a])))


def parity_cases(w, emit):
    for name, surface, extra, made in PARITY_CASES:
        extra = [a.replace("{w}", str(w)) for a in extra]
        target = [str(ROOT / surface)] if surface.endswith(".py") else ["-m", surface]
        t0 = time.time()
        p = run([*target, *extra], timeout=300)
        res = summarise(p) + f" | check: {time.time() - t0:.0f} s"
        if made is not None:
            left = sorted(x.name for x in (w / made).iterdir()) if (w / made).exists() else None
            res += f", {made} left: {left}" if left is not None else f", no {made} left"
        emit(name, surface, res)


def script_cases(w, emit, group, script):
    """Run an in-process script (the `show` harness, then `script`) in a fresh interpreter and
    emit the [case, surface, result] lines it prints; a script that dies is a case of its own."""
    code = "import json\nROOT = %r\nW_PATH = %r\n" % (str(ROOT), str(w)) + API + script
    p = run(["-c", code])
    for line in p.stdout.splitlines():
        if line.startswith("["):
            emit(*json.loads(line))
    if p.returncode:
        emit(f"{group} script", group, summarise(p))


def api_cases(w, emit):
    script_cases(w, emit, "api", API_CHECKPOINTS)


def native_cases(w, emit):
    cache = w / "onednn-cache"
    env = dict(os.environ, AIRBENCH_JAX_CACHE=str(cache), PYTHONPATH=str(ROOT),
               JAX_PLATFORMS="cpu")

    def use(case, conv="'auto'", **extra):         # a script using the library
        p = subprocess.run([PY, "-c", NATIVE_USE.replace("CONV", conv)], capture_output=True,
                           text=True, cwd=ROOT, env=dict(env, **extra), timeout=600)
        emit(case, "native", summarise(p))

    def cli(case, **extra):                         # the CLI with --conv-impl onednn
        p = subprocess.run([PY, "-m", "airbench_jax", *SMALL, "--epochs", "1", "--data-dir",
                            str(w / "tiny"), "--out", str(w / "native.jsonl"), "--conv-impl",
                            "onednn"], capture_output=True, text=True, cwd=ROOT,
                           env=dict(env, **extra), timeout=600)
        emit(case, "native", summarise(p))
    use("TTA inference, then the script ends (oneDNN)", "'onednn'")
    for lib in sorted(cache.glob("*.so")):          # a truncated copy under its own name
        lib.write_bytes(lib.read_bytes()[:50000])
        for side in cache.glob(lib.name + ".*"):
            side.unlink()
    cli("a truncated cached library, --conv-impl onednn")
    use("a truncated cached library, auto (rebuilt by the case above)")
    shutil.rmtree(cache, ignore_errors=True)
    use("CXX=true (writes nothing), auto", CXX="true")
    cli("CXX=true (writes nothing), --conv-impl onednn", CXX="true")
    bad = w / "bad-c++"
    bad.write_text("#!/bin/sh\necho 'x.cc:1:1: error: boom' >&2\necho '      | ^' >&2\nexit 1\n")
    bad.chmod(0o755)
    cli("a compiler error, --conv-impl onednn", CXX=str(bad))
    (w / "cache-file").write_text("x")
    cli("AIRBENCH_JAX_CACHE is a file, --conv-impl onednn",
        AIRBENCH_JAX_CACHE=str(w / "cache-file"))


def library_cases(w, emit):
    script_cases(w, emit, "library", LIBRARY)


def main(argv=None) -> int:
    """Bad options (an unknown group, an --out that cannot be written) are one line and exit 2."""
    sys.path.insert(0, str(ROOT))
    from airbench_common.cli import Parser  # noqa: PLC0415
    from airbench_common.errors import cli_main  # noqa: PLC0415
    from airbench_common.validate import check_out_file  # noqa: PLC0415
    return cli_main(lambda args: _main(args, Parser, check_out_file))(argv)


def _main(argv, Parser, check_out_file) -> int:
    ap = Parser(prog="python benchmarks/fault_table.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSONL file to write, one [case, surface, result] a line")
    ap.add_argument("--only", choices=list(GROUPS), action="append",
                    help="run only this group (repeatable; default all)")
    ap.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    a = ap.parse_args(argv)
    check_out_file(a.out, "--out")
    groups = a.only or list(GROUPS)
    w = Path(tempfile.mkdtemp(prefix="fault_table_"))
    scratch(w)
    with open(a.out, "w") as f:
        def emit(case, surface, result):
            f.write(json.dumps([case, surface, result.replace(str(w), "W")]) + "\n")
            f.flush()
            print(f"{surface:16s} {case:45s} {result.replace(str(w), 'W')}", flush=True)
        try:
            for g in groups:
                GROUPS[g](w, emit)
        finally:
            subprocess.run(["umount", str(w / "ro")], capture_output=True)
            (w / "ro").chmod(0o755)
            shutil.rmtree(w, ignore_errors=True)
    return 0


GROUPS = {"api": api_cases, "compare": compare_cases, "cli": cli_cases, "parity": parity_cases,
          "native": native_cases, "library": library_cases}

if __name__ == "__main__":
    sys.exit(main())
