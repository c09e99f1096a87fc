"""The hostile-user cases that benchmarks/fault_table.py runs: argument lists for the CLIs and
parity commands, and the in-process scripts for the library API (each script prints one JSON line
[case, surface, result] per case through `show`). Data only: the runner lives in fault_table.py."""

# (case, extra arguments) for python -m airbench_jax / airbench_torch. {w}: the scratch folder.
CLI_CASES = [
    ("--device cuda", ["--device", "cuda"]), ("--device gpu", ["--device", "gpu"]),
    ("--device cpu:5", ["--device", "cpu:5"]), ("--device bogus", ["--device", "bogus"]),
    ("--device '' (empty)", ["--device", ""]),
    ("--set name=evil", ["--set", "name=evil"]), ("--set lr=abc", ["--set", "lr=abc"]),
    ("--set bogus=1", ["--set", "bogus=1"]), ("--set lr (no =)", ["--set", "lr"]),
    ("--set =5 (empty key)", ["--set", "=5"]),
    ("--set lr=1 --set lr=2", ["--set", "lr=1", "--set", "lr=2"]),
    ("--set lr_end=-1", ["--set", "lr_end=-1"]), ("--set weight_decay=nan", ["--set", "weight_decay=nan"]),
    ("--set whiten_kernel=0", ["--set", "whiten_kernel=0"]),
    ("--set whiten_kernel=33", ["--set", "whiten_kernel=33"]),
    ("--set widths=a,b,c", ["--set", "widths=a,b,c"]), ("--set widths=4,8", ["--set", "widths=4,8"]),
    ("--set widths=4,0,8", ["--set", "widths=4,0,8"]), ("--set flip=maybe", ["--set", "flip=maybe"]),
    ("--set batch_size=0", ["--set", "batch_size=0"]), ("--set batch_size=2.5", ["--set", "batch_size=2.5"]),
    ("--set batch_size=100 (> 64 images)", ["--set", "batch_size=100"]),
    ("--set lr=inf", ["--set", "lr=inf"]), ("--set lr=1e400", ["--set", "lr=1e400"]),
    ("--set tta_level=5", ["--set", "tta_level=5"]),
    ("--set scaling_factor=-1", ["--set", "scaling_factor=-1"]),
    ("--set whiten_images=0", ["--set", "whiten_images=0"]), ("--set epochs=1e9", ["--set", "epochs=1e9"]),
    ("--set optimizer=adam", ["--set", "optimizer=adam"]), ("--set momentum=1", ["--set", "momentum=1"]),
    ("--set filter_keep=16 (= batch)", ["--set", "filter_keep=16"]),
    ("--set lr=1e6 (collapse)", ["--set", "lr=1e6"]),
    ("--epochs 0", ["--epochs", "0"]), ("--epochs nan", ["--epochs", "nan"]),
    ("--runs 0", ["--runs", "0"]), ("--runs -1", ["--runs", "-1"]), ("--runs 1.5", ["--runs", "1.5"]),
    ("--n-train 0", ["--n-train", "0"]), ("--n-train -5", ["--n-train", "-5"]),
    ("--n-train 1000000", ["--n-train", "1000000"]),
    ("--seed -1", ["--seed", "-1"]), ("--seed 2**70", ["--seed", str(2 ** 70)]),
    ("--out a directory", ["--out", "{w}/adir"]), ("--out in a read-only dir", ["--out", "{w}/ro/r.jsonl"]),
    ("--out parent is a file", ["--out", "{w}/afile/r.jsonl"]), ("--out '' (empty)", ["--out", ""]),
    ("--out /dev/null", ["--out", "/dev/null"]),
    ("--dtype float16", ["--dtype", "float16"]), ("--dtype bfloat16", ["--dtype", "bfloat16"]),
    ("--dtype int8", ["--dtype", "int8"]), ("--ns-dtype float16", ["--ns-dtype", "float16"]),
    ("--recipe nope", ["--recipe", "nope"]), ("--recipe '' (empty)", ["--recipe", ""]),
    ("--bogus (unknown option)", ["--bogus"]),
    ("--data-dir empty (no download)", ["--data-dir", "{w}/empty"]),
    ("--data-dir with a corrupt train.npz", ["--data-dir", "{w}/corrupt"]),
    ("--data-dir names a file", ["--data-dir", "{w}/afile"]),
    ("--quiet (a good run)", ["--quiet"]),
]


# (case, surface, arguments, folder that must not exist afterwards or None) for the parity
# commands other than compare and for the benchmark scripts the README names. {w}: the scratch
# folder. Every case is bad input: exit 2 and one stderr line, before any work, nothing created.
PARITY_CASES = [
    ("--recipe nonexistent", "parity.numerics", ["--recipe", "nonexistent"], None),
    ("--batch 0", "parity.numerics", ["--batch", "0"], None),
    ("--width-scale -1", "parity.numerics", ["--width-scale", "-1"], None),
    ("--impls bogus", "parity.numerics", ["--impls", "bogus"], None),
    ("--json under a file", "parity.numerics", ["--json", "{w}/afile/n.json"], None),
    ("--json a directory", "parity.numerics", ["--json", "{w}/adir"], None),
    ("--recipe nope (new --out)", "parity.lockstep", ["--recipe", "nope", "--out", "{w}/ls1"], "ls1"),
    ("--steps 0", "parity.lockstep", ["--steps", "0", "--out", "{w}/ls2"], "ls2"),
    ("--set bogus=1", "parity.lockstep", ["--set", "bogus=1", "--out", "{w}/ls3"], "ls3"),
    ("--jump-factor nan", "parity.lockstep", ["--jump-factor", "nan", "--out", "{w}/ls4"], "ls4"),
    ("--out names a file", "parity.lockstep", ["--out", "{w}/afile"], None),
    ("--out under a file", "parity.lockstep", ["--out", "{w}/afile/sub"], None),
    ("--summarize, no lockstep.json", "parity.lockstep", ["--summarize", "--out", "{w}/empty"], None),
    ("--permutations 0", "parity.examples", ["{w}/empty:jax", "{w}/empty:torch", "--permutations", "0"], None),
    ("--json under a file", "parity.examples", ["{w}/empty:jax", "{w}/empty:torch", "--json", "{w}/afile/e.json"], None),
    ("DIR does not exist", "parity.examples", ["{w}/nope:jax", "{w}/nope:torch"], None),
    ("--recipe nope", "parity.bench", ["--recipe", "nope"], None),
    ("--batch 0", "parity.bench", ["--batch", "0"], None),
    ("--reps 0", "parity.bench", ["--reps", "0"], None),
    ("--set bogus=1", "parity.bench", ["--set", "bogus=1"], None),
    ("--json under a file", "parity.bench", ["--json", "{w}/afile/b.json"], None),
    ("--policy bogus", "parity.policies", ["--policy", "bogus"], None),
    ("--recipe nope", "parity.policies", ["--recipe", "nope"], None),
    ("--steps 0", "parity.policies", ["--steps", "0"], None),
    ("--json under a file", "parity.policies", ["--json", "{w}/afile/p.json"], None),
    ("--max-runs 0", "parity.plan", ["--simulate", "--sd", "0.4", "--max-runs", "0"], None),
    ("--engine dask --scheduler tcp://127.0.0.1:1 (unreachable)", "parity.compare",
     ["--preset", "smoke", "--no-progress", "--no-plots", "--data-dir", "{w}/tiny", "--runs", "2",
      "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", "--out", "{w}/dask1"], "dask1"),
    ("--seeds 0:10000000000", "airbench_jax", ["--seeds", "0:10000000000", "--data-dir", "{w}/tiny"], None),
    ("--seeds 0:10000000000", "airbench_torch", ["--seeds", "0:10000000000", "--data-dir", "{w}/tiny"], None),
    ("--only bogus", "benchmarks/fault_table.py", ["--only", "bogus", "--out", "{w}/ft.jsonl"], None),
    ("--out under a file", "benchmarks/fault_table.py", ["--only", "parity", "--out", "{w}/afile/ft.jsonl"], None),
    ("--upstream not unpacked", "benchmarks/upstream_train94.py", ["--upstream", "{w}/empty", "--out", "{w}/u.jsonl"], None),
    ("--epochs 0", "benchmarks/upstream_train94.py", ["--upstream", "{w}/empty", "--epochs", "0"], None),
    ("--seeds a,b", "benchmarks/upstream_train94.py", ["--upstream", "{w}/empty", "--seeds", "a,b"], None),
    ("--out under a file", "benchmarks/upstream_train94.py", ["--upstream", "{w}/empty", "--out", "{w}/afile/u.jsonl"], None),
    ("--seeds 0", "benchmarks/bench_seeds.py", ["--seeds", "0"], None),
    ("--json under a file", "benchmarks/bench_seeds.py", ["--json", "{w}/afile/s.json"], None),
    ("--seeds 4:0", "benchmarks/preset_spread.py", ["--seeds", "4:0", "--out", "{w}/ps.jsonl"], None),
    ("--out under a file", "benchmarks/preset_spread.py", ["--out", "{w}/afile/ps.jsonl"], None),
    ("--recipe nope", "benchmarks/trace_step.py", ["--recipe", "nope"], None),
    ("--json under a file", "benchmarks/trace_step.py", ["--json", "{w}/afile/t.json"], None),
]


# show(case, fn): the harness every in-process script starts with (prints [case, surface, result])
API = r"""
import sys, numpy as np
sys.path.insert(0, ROOT)
from airbench_common.errors import UsageError
def show(case, fn):
    try:
        r = fn(); print(json.dumps([case, "api", "returned " + repr(r)[:100]]))
    except UsageError as e:
        one = "\n" not in str(e)
        print(json.dumps([case, "api", f"{type(e).__name__}{'' if one else ' (multi-line)'}: {str(e)[:140]}"]))
    except Exception as e:
        print(json.dumps([case, "api", f"UNEXPECTED {type(e).__name__}: {str(e)[:140]}"]))
"""


# checkpoints and zero-image runs, in one interpreter (W_PATH: the scratch folder)
API_CHECKPOINTS = r"""
from pathlib import Path
import jax
from flax import nnx
from airbench_common.recipes import get_recipe
from airbench_jax import load_checkpoint, save_checkpoint
import importlib
jtrain = importlib.import_module('airbench_jax.run')
from airbench_jax.model import make_net
W = Path(W_PATH)
for name, content in (("empty", b""), ("truncated .npz", b"PK\x03\x04garbage"),
                      ("other format (.npy bytes)", b"\x93NUMPY not msgpack"), ("text file", b"hello")):
    p = W / ("c_" + name.split()[0]); p.write_bytes(content)
    show("load_checkpoint: " + name, lambda p=p: load_checkpoint(p, "airbench94"))
show("load_checkpoint: missing file", lambda: load_checkpoint(W / "nope.ckpt", "airbench94"))
show("load_checkpoint: a folder", lambda: load_checkpoint(W, "airbench94"))
small = make_net(get_recipe("airbench94", widths=(4, 8, 8)), None)
for ext in (".npz", ".msgpack"):
    save_checkpoint(small, W / ("small" + ext))
    other = make_net(get_recipe("airbench94", widths=(8, 8, 8)), None)
    before = jax.tree.leaves(nnx.state(other))
    show("load_checkpoint: other width (" + ext + ")", lambda: load_checkpoint(W / ("small" + ext), other))
    after = jax.tree.leaves(nnx.state(other))
    same = all(np.array_equal(a, b) for a, b in zip(before, after))
    print(json.dumps(["load_checkpoint: other width (" + ext + "): caller's net unchanged", "api", str(same)]))
arrays = dict(np.load(W / "small.npz"))
arrays.pop(sorted(arrays)[0])
np.savez(W / "missing.npz", **arrays)
show("load_checkpoint: .npz missing a key", lambda: load_checkpoint(W / "missing.npz", make_net(get_recipe("airbench94", widths=(4, 8, 8)), None)))
empty = (np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0,), np.int64))
test = (np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))
show("jax run_recipe on 0 training images", lambda: jtrain.run_recipe("airbench94", 0, train_data=empty,
     test_data=test, device="cpu"))
ttrain = importlib.import_module('airbench_torch.train')
show("torch run_recipe on 0 training images", lambda: ttrain.run_recipe("airbench94", 0, train_data=empty,
     test_data=test, device="cpu"))
"""


# the native build and evaluation: each case a fresh interpreter
NATIVE_USE = """
import numpy as np, airbench_jax as ab
rng = np.random.default_rng(0)
loader = ab.CifarLoader(train=False, data=(rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
                                           rng.integers(0, 10, 200)))
net = ab.make_net94(widths=(8, 8, 8), conv_impl=CONV)
print(ab.infer(net, loader, 2).shape)
"""


# the library's arguments, both frameworks (the same checks as the CLIs')
LIBRARY = r"""
import numpy as np
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64)
for fw in ("airbench_jax", "airbench_torch"):
    ab = __import__(fw)
    show(fw + ": CifarLoader(data=float images)", lambda: ab.CifarLoader(train=False, data=(x.astype(np.float32), y)))
    show(fw + ": CifarLoader(data=labels 10..)", lambda: ab.CifarLoader(train=False, data=(x, y + 10)))
    show(fw + ": CifarLoader(batch_size=0)", lambda: ab.CifarLoader(train=False, batch_size=0, data=(x, y)))
    show(fw + ": make_net94(widths=(0, 8, 8))", lambda: ab.make_net94(widths=(0, 8, 8)))
    loader = ab.CifarLoader(train=False, batch_size=32, data=(x, y))
    net = ab.make_net94(widths=(4, 8, 8))
    show(fw + ": evaluate(net, loader, 7)", lambda: ab.evaluate(net, loader, 7))
    show(fw + ": infer(net, loader, 1.5)", lambda: ab.infer(net, loader, 1.5))
    show(fw + ": train94(learning_rate=nan)", lambda: ab.train94(loader, learning_rate=float("nan"), verbose=False))
    show(fw + ": run_recipe(seed=-1)", lambda: ab.run_recipe("airbench94", -1, train_data=(x, y), test_data=(x, y)))
"""
