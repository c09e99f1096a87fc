"""One command that validates a GPU machine end to end and writes its evidence.

    python -m parity.gpu_check --out docs/results/gpu/<device>/ --subset cifar10-subset.npz
    python -m parity.gpu_check --make-subset cifar10-subset.npz --train 15000 --test 2000
    python -m parity.gpu_check --out docs/results/gpu/<device>/ --subset ... --stages runs
    python -m parity.gpu_check --dry-run --out /tmp/gpu-dry    # CPU, tiny, every stage

Stages, in order, each written to OUT as soon as it ends (`summary.json` is rewritten after every
stage, run records are appended one by one), so a run stopped by its budget, by SIGTERM or by
Ctrl-C keeps everything measured before:

1. environment (`environment.json`): GPU name, compute capability and memory, driver and CUDA /
   cuDNN versions, `nvidia-smi` if present, Python and library versions, JAX's devices, the XLA
   flags and environment variables this command set (and why) or found set by the user, the
   precision policy;
2. numerics (`numerics.json`, `numerics.txt`): `parity.numerics` for airbench94_muon at full
   width, float32 with TF32 off (the numerics setting): JAX on the GPU, PyTorch on the CPU
   (parity.numerics' PyTorch side is CPU-only);
3. throughput (`throughput.json`): full train steps (forward, backward, optimizer) of both
   frameworks on the GPU at batch 2000 on synthetic images, in the default precision policy
   (`upstream` on GPU), frameworks alternating rep by rep, each timed between device
   synchronisations; JAX's compile time and PyTorch's first-call time reported apart;
4. runs (`runs.jsonl`): full airbench94_muon runs, JAX and PyTorch alternating (seed k on both),
   on the training subset, evaluated on the test subset, until the budget would be exceeded.
   Another invocation on the same OUT with `--stages runs` adds pairs with the next seeds
   (one command may run only ~8 minutes on the GPU machines); summary.json keeps the stages it
   did not re-run.

Data: at most 64 MiB can travel with the code, so `--make-subset` writes the first N training and
M test images of $AIRBENCH_DATA (or --data-dir) into one compressed npz (keys train_images,
train_labels, test_images, test_labels, source); its sha256, size and source label are recorded
in every result. The timing stage uses synthetic images.

Only Python 3.12, torch, jax/jaxlib (+ CUDA plugin), flax (and what flax itself imports, rich
among them), optax, numpy, scipy, matplotlib and tqdm are assumed: nothing on this path needs
hypothesis or filelock (records are appended without the file lock when filelock is missing:
this command is the only writer of OUT).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# XLA flags for a small convnet on one GPU, set only when the user has not set XLA_FLAGS (and
# recorded either way). Each must be known to XLA: an unknown flag aborts the process.
XLA_FLAGS = (
    ("--xla_gpu_autotune_level=4",
     "autotune every cuDNN convolution and GEMM and check its result (XLA's own default level, "
     "made explicit so the measured kernels are autotuned ones whatever the site's default)"),
    ("--xla_gpu_force_conv_nhwc=true",
     "NHWC layout for every convolution: our activations are NHWC and cuDNN's tensor-core "
     "kernels want NHWC, so no transposes between the convolutions"),
)
# Environment for JAX and PyTorch sharing one GPU in one process, set only where unset.
ENV_DEFAULTS = (
    ("XLA_PYTHON_CLIENT_PREALLOCATE", "false",
     "JAX would otherwise take 75% of the GPU memory at start-up and starve PyTorch"),
)
RECIPE = "airbench94_muon"
SUBSET_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
MAX_SUBSET_MIB = 55.0   # the 64 MiB a GPU command may carry, less room for the code


class BudgetExceeded(Exception):
    """The time budget (or SIGTERM) ended the check; what is measured is already written."""


def setup_environment() -> dict:
    """Set XLA_FLAGS and ENV_DEFAULTS where the user has not (before JAX is imported)."""
    out = {}
    if os.environ.get("XLA_FLAGS"):
        out["XLA_FLAGS"] = dict(value=os.environ["XLA_FLAGS"], set_by="user", reasons={})
    else:
        os.environ["XLA_FLAGS"] = " ".join(f for f, _ in XLA_FLAGS)
        out["XLA_FLAGS"] = dict(value=os.environ["XLA_FLAGS"], set_by="parity.gpu_check",
                                reasons=dict(XLA_FLAGS))
    for name, value, why in ENV_DEFAULTS:
        if name in os.environ:
            out[name] = dict(value=os.environ[name], set_by="user")
        else:
            os.environ[name] = value
            out[name] = dict(value=value, set_by="parity.gpu_check", reason=why)
    return out


# ---------------------------------------------------------------------- files
def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    """Whole or not at all (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def append_record(path: Path, rec: dict) -> None:
    """airbench_common.records.append_record when filelock is installed; otherwise the same line
    appended and fsynced without the lock (this command is the only writer of OUT)."""
    try:
        import filelock  # noqa: F401 (only whether it is there)
    except ImportError:
        from airbench_common.files import jsonable
        with open(path, "a") as f:
            f.write(json.dumps(jsonable(rec), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return
    from airbench_common.records import append_record as append
    append(path, rec)


# ---------------------------------------------------------------------- the data subset
def make_subset(path, n_train: int, n_test: int, data_dir=None) -> dict:
    """The first n_train training and n_test test images of the dataset, in one compressed npz;
    refused (UsageError) above MAX_SUBSET_MIB."""
    from airbench_common.data import dataset_label, load_cifar10
    from airbench_common.errors import UsageError
    tr, te = load_cifar10("train", data_dir), load_cifar10("test", data_dir)
    if not (1 <= n_train <= len(tr[0]) and 1 <= n_test <= len(te[0])):
        raise UsageError(f"--train {n_train} / --test {n_test}: give 1..{len(tr[0])} training and "
                         f"1..{len(te[0])} test images")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    source = f"{dataset_label(data_dir)}: first {n_train} train, first {n_test} test images"
    np.savez_compressed(tmp, train_images=tr[0][:n_train], train_labels=tr[1][:n_train],
                        test_images=te[0][:n_test], test_labels=te[1][:n_test],
                        source=np.asarray(source))
    mib = tmp.stat().st_size / 2 ** 20
    if mib > MAX_SUBSET_MIB:
        tmp.unlink()
        raise UsageError(f"the subset would be {mib:.1f} MiB, over the {MAX_SUBSET_MIB:g} MiB that "
                         f"fit beside the code on a GPU machine; give fewer --train/--test images")
    os.replace(tmp, path)
    return dict(path=str(path), sha256=sha256(path), mib=round(mib, 2), source=source,
                n_train=n_train, n_test=n_test)


def load_subset(path) -> tuple[dict, tuple, tuple]:
    """(identity, (train images, labels), (test images, labels)) of a --make-subset file."""
    from airbench_common.data import DatasetError, check_arrays
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in SUBSET_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{path} lacks {missing}; make it with python -m "
                                   "parity.gpu_check --make-subset")
            arrs = {k: z[k] for k in SUBSET_KEYS}
            source = str(z["source"]) if "source" in z.files else "unknown"
    except (OSError, ValueError) as exc:
        # np.load's own text for a non-array file suggests allow_pickle=True: never say that
        why = "not an .npz of arrays" if "pickle" in str(exc) else exc
        raise DatasetError(f"cannot read the subset {path}: {why}; make it with python -m "
                           "parity.gpu_check --make-subset") from None
    train = check_arrays(arrs["train_images"], arrs["train_labels"], str(path))
    test = check_arrays(arrs["test_images"], arrs["test_labels"], str(path))
    ident = dict(path=str(path), sha256=sha256(path), mib=round(path.stat().st_size / 2 ** 20, 2),
                 source=source, n_train=len(train[0]), n_test=len(test[0]),
                 format="npz (savez_compressed): uint8 NHWC images, int64 labels")
    return ident, train, test


def synthetic_data(n_train: int, n_test: int):
    from .batches import synthetic_images
    x, y = synthetic_images(n_train + n_test, seed=0)
    ident = dict(source="synthetic (parity.batches.synthetic_images, seed 0)", n_train=n_train,
                 n_test=n_test, sha256=None)
    return ident, (x[:n_train], y[:n_train].astype(np.int64)), (x[n_train:],
                                                                y[n_train:].astype(np.int64))


# ---------------------------------------------------------------------- stages
def environment(env_set: dict) -> dict:
    import jax
    import torch
    from airbench_common.env import machine_info, package_versions
    from airbench_common.precision import default_policy_name
    info = dict(env_set=env_set, machine=machine_info(),
                versions=package_versions("torch", "jax", "jaxlib", "flax", "optax", "scipy",
                                          "matplotlib", "tqdm", "jax-cuda13-plugin",
                                          "jax-cuda12-plugin"),
                jax=dict(backend=jax.default_backend(),
                         devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()]),
                torch=dict(cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                           cudnn=torch.backends.cudnn.version()
                           if torch.backends.cudnn.is_available() else None))
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = dict(name=p.name, capability=f"{p.major}.{p.minor}",
                           memory_gib=round(p.total_memory / 2 ** 30, 1),
                           multiprocessors=p.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm,power.limit", "--format=csv"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"not available ({type(exc).__name__})"
    accel = jax.default_backend() != "cpu"
    info["default_precision_policy"] = default_policy_name(accel)
    return info


def numerics(out: Path, dry: bool) -> dict:
    """parity.numerics for airbench94_muon (full width; dry: width 1/8, batch 8)."""
    import jax
    import torch
    from .numerics import check_newton_schulz, run_recipe_checks
    from .rows import Report
    from .sides import setup_precision
    setup_precision()
    try:
        rep = Report(meta=dict(recipe=RECIPE, width_scale=0.125 if dry else 1.0,
                               jax_device=str(jax.devices()[0]), torch_device="cpu",
                               dry_run=dry,
                               setting="float32, TF32 off (parity.sides.setup_precision)"))
        check_newton_schulz(rep)
        # dry: width 1/16, batch 4, native conv, forward/gradient/TTA rows only (the optimizer
        # steps and lr schedules take minutes on a small CPU; they run in the real check)
        run_recipe_checks(rep, RECIPE, width_scale=1 / 16 if dry else 1.0, batch=4 if dry else 32,
                          data="auto", whiten_n=64 if dry else 5000, lrs=not dry,
                          steps=not dry, impls=("native",) if dry else ("native", "matmul"),
                          log=True)
    finally:  # back to the libraries' defaults for the timed stages (each sets its policy)
        jax.config.update("jax_default_matmul_precision", None)
        torch.use_deterministic_algorithms(False)
    res = rep.to_json()
    write_json(out / "numerics.json", res)
    (out / "numerics.txt").write_text(rep.table() + "\n")
    fails = rep.failures
    return dict(checks=len(rep.rows), failed=len(fails),
                failures=[f"{f.check} [{f.impl}]" for f in fails][:20],
                status="ok" if not fails else "failed")


def _sync_torch(dev):
    from airbench_torch.device import synchronize
    synchronize(dev)


def throughput(out: Path, batch: int, reps: int, steps: int, width_scale: float = 1.0) -> dict:
    """Train-step images/s of both frameworks in the default policy (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import torch
    import airbench_jax as aj
    import airbench_torch as at
    from airbench_jax import precision as jprec
    from airbench_torch.device import resolve_device, to_memory_format, uses_channels_last
    from .sides import scaled_recipe
    r = scaled_recipe(RECIPE, width_scale, batch_size=batch, epochs=1000)
    n_train = batch * 50                   # a schedule long enough that steps never run out
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    dev = resolve_device(None)
    tpol = at.device.resolve_precision(None, dev)
    jpol = jprec.resolve(None)
    at.device.apply_tf32(tpol)
    cl = uses_channels_last(dev)
    xt = to_memory_format(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), cl).to(dev)
    xt = xt.to(at.device.torch_dtype(tpol.compute))
    yt = torch.from_numpy(y.astype(np.int64)).to(dev)
    tstate = at.make_train_state(r, n_train, xt[:64].float(), seed=0, device=dev,
                                 precision=tpol, channels_last=cl)
    t0 = time.perf_counter()
    at.train_step(tstate, xt, yt)          # cuDNN's first-call work (algorithm choice, allocator)
    _sync_torch(dev)
    torch_first = time.perf_counter() - t0
    with jprec.matmul_context(jpol):
        xj, yj = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
        jstate = aj.init_train_state(r, n_train, jax.random.PRNGKey(0), whiten_images=xj[:64],
                                     precision=jpol)
        t0 = time.perf_counter()
        run = aj.train_step.lower(jstate, xj, yj).compile()
        jax_compile = time.perf_counter() - t0
    box = [jstate]

    def jax_steps():
        for _ in range(steps):
            box[0], loss = run(box[0], xj, yj)
        jax.block_until_ready(box[0])

    def torch_steps():
        for _ in range(steps):   # as a run's loop: no wait for the device inside (check=False)
            at.train_step(tstate, xt, yt, check=False)
        _sync_torch(dev)

    jax_steps()                            # first call of the compiled step
    torch_steps()
    rates = {"jax": [], "torch": []}
    load = os.getloadavg()
    for _ in range(reps):
        for name, fn in (("jax", jax_steps), ("torch", torch_steps)):
            t = time.perf_counter()
            fn()
            rates[name].append(batch * steps / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    res = dict(recipe=RECIPE, widths=list(r.widths), batch=batch, steps_per_rep=steps, reps=reps,
               data="synthetic normal(0, 1) images", device=str(dev),
               jax_device=str(jax.devices()[0]), precision=dict(torch=tpol.to_dict(),
                                                               jax=jpol.to_dict()),
               images_per_second=med, all_rates=rates,
               ratio_jax_over_torch=med["jax"] / med["torch"],
               jax_compile_seconds=jax_compile, torch_first_call_seconds=torch_first,
               load_average=dict(before=load, after=os.getloadavg()),
               timing="frameworks alternate rep by rep; each rep runs steps_per_rep train steps "
                      "between device synchronisations (torch.cuda.synchronize / "
                      "jax.block_until_ready); compile and first calls excluded")
    write_json(out / "throughput.json", res)
    return dict(status="ok", images_per_second=med, ratio_jax_over_torch=res[
        "ratio_jax_over_torch"], jax_compile_seconds=jax_compile)


def runs(out: Path, deadline: float, train, test, data_ident: dict, overrides: dict,
         max_pairs: int, log=print) -> dict:
    """airbench94_muon runs, JAX then PyTorch per seed, each record appended as it ends, while
    the next pair is expected to end before `deadline` (from the slowest pair so far)."""
    import importlib
    # by module path: both packages export a function named `train` that hides the submodule
    jt = importlib.import_module("airbench_jax.run")
    tt = importlib.import_module("airbench_torch.train")
    path = out / "runs.jsonl"
    first = _next_seed(path)   # a later invocation (--stages runs) continues the seeds
    common = dict(overrides=overrides, train_data=train, test_data=test, eval_every_epoch=False)
    done, pair_seconds = {"jax": [], "torch": []}, []
    t0 = time.perf_counter()
    tt.warmup(RECIPE, overrides=overrides, test_data=test)   # first-call work, outside the runs
    warm = time.perf_counter() - t0
    for seed in range(first, first + max_pairs):
        if pair_seconds and time.time() + 1.2 * max(pair_seconds) > deadline:
            break
        tp = time.perf_counter()
        for name, fn in (("jax", jt.run_recipe), ("torch", tt.run_recipe)):
            rec = fn(RECIPE, seed, **common)
            rec["data"] = {**rec.get("data", {}), **data_ident,
                           "label": f"{data_ident.get('source')}"}
            rec["preset"] = "gpu_check"
            append_record(path, rec)
            done[name].append(dict(seed=seed, status=rec["status"], acc=rec["acc"],
                                   acc_tta=rec["acc_tta"], train_seconds=rec["train_seconds"],
                                   compile_seconds=rec.get("compile_seconds")))
            log(f"[gpu_check] {name} seed {seed}: {rec['status']} acc_tta {rec['acc_tta']} "
                f"train {rec['train_seconds']:.2f} s")
        pair_seconds.append(time.perf_counter() - tp)
    summary = {}
    for name, rs in done.items():
        ok = [x for x in rs if x["status"] == "ok"]
        accs = [x["acc_tta"] for x in ok]
        secs = [x["train_seconds"] for x in ok]
        comp = [x["compile_seconds"] for x in rs if x["compile_seconds"] is not None]
        summary[name] = dict(runs=len(rs), ok=len(ok), mean_acc_tta=_mean(accs),
                             sd_acc_tta=_sd(accs), mean_train_seconds=_mean(secs),
                             min_train_seconds=min(secs) if secs else None,
                             mean_compile_seconds=_mean(comp))
    return dict(status="ok", records=str(path), torch_warmup_seconds=warm,
                pair_seconds=pair_seconds, per_side=summary)


STAGES = ("environment", "numerics", "throughput", "runs", "studies")


def parse_study(text: str) -> tuple[str, list[str], int]:
    """--study RECIPE:ARMS:RUNS (e.g. airbench94_muon:jax,torch,upstream:10) -> its parts."""
    from airbench_common.errors import UsageError
    from airbench_common.recipes import recipe_names
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(f"--study {text!r}: give RECIPE:ARMS:RUNS, e.g. "
                         "airbench94_muon:jax,torch,upstream:10")
    recipe, arms, runs = parts
    if recipe not in recipe_names():
        raise UsageError(f"--study {text!r}: unknown recipe {recipe!r}; one of "
                         f"{', '.join(recipe_names())}")
    arms = [a for a in arms.split(",") if a]
    bad = [a for a in arms if a not in ("jax", "torch", "upstream")]
    if bad or not arms or len(set(arms)) != len(arms):
        raise UsageError(f"--study {text!r}: arms are jax, torch, upstream, each once")
    if not runs.isdigit() or not 1 <= int(runs) <= 200:
        raise UsageError(f"--study {text!r}: RUNS {runs!r} must be a whole number in 1..200 "
                         "(runs per arm)")
    return recipe, arms, int(runs)


def studies(out: Path, deadline: float, specs, *, data_dir, upstream_dir, commit, dry_run,
            log=print) -> dict:
    """Each (recipe, arms, runs) as a parity.compare study on all the data (preset full; smoke in
    a dry run) into OUT/compare-<recipe>/, its wall-time cap the budget left shared among the
    studies still to come; the data's identity checked first (the decoded JPEG CIFAR-10's sha256,
    airbench_common.data)."""
    from airbench_common.data import dataset_label, load_cifar10
    from .study import compare
    from .study.upstream import SCRIPT_RECIPES
    label = dataset_label(data_dir)
    n = dict(train=len(load_cifar10("train", data_dir)[0]), test=len(load_cifar10("test",
                                                                                 data_dir)[0]))
    res = dict(status="ok", data=dict(dir=str(data_dir), label=label, **n), commit=commit,
               studies={})
    if label != "JPEG CIFAR-10" and not dry_run:
        res["warning"] = f"the data is {label!r}, not the known JPEG CIFAR-10 pixels"
    for i, (recipe, arms, runs) in enumerate(specs):
        left = (deadline - time.time()) / 60
        share = 0.9 * left / (len(specs) - i)     # a tenth kept for the reports
        if share < 1.0:
            res["studies"][recipe] = dict(status="left out: the budget was spent")
            continue
        folder = out / f"compare-{recipe}"
        argv = ["--recipe", recipe, "--preset", "smoke" if dry_run else "full",
                "--runs", str(min(runs, 3) if dry_run else runs), "--frameworks",
                ",".join(arms), "--out", str(folder), "--data-dir", str(data_dir),
                "--wall-minutes", f"{share:.2f}", "--no-progress"]
        if "upstream" in arms and recipe in SCRIPT_RECIPES:
            if upstream_dir is None:
                res["studies"][recipe] = dict(status="error: --upstream-dir not given")
                continue
            argv += ["--upstream-script", str(Path(upstream_dir) / f"{recipe}.py")]
        log(f"[gpu_check] study {recipe} ({','.join(arms)}, at most {runs} runs per arm, "
            f"{share:.1f} min)")
        code = compare.main(argv)
        try:
            rep = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError):
            rep = {}
        res["studies"][recipe] = dict(
            status="ok" if code == 0 else f"exit status {code}", verdict=rep.get("verdict"),
            pairs=[{k: p.get(k) for k in ("a", "b", "decision", "reason")}
                   for p in rep.get("pairs") or []],
            per_framework={fw: dict(runs=rep["counts"][fw]["ok"],
                                    acc_tta=v["acc_tta"].get("mean"),
                                    acc_tta_sd=v["acc_tta"].get("std"),
                                    median_time_seconds=(v.get("time_seconds") or {}).get(
                                        "median"))
                           for fw, v in (rep.get("per_framework") or {}).items()})
        if commit:
            (folder / "COMMIT").write_text(commit + "\n")
    if any(v["status"] != "ok" for v in res["studies"].values()):
        res["status"] = "failed"
    return res


def _next_seed(path: Path) -> int:
    """One past the highest seed recorded in `path` (0 when there is none)."""
    seeds = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                seeds.append(int(json.loads(line)["seed"]))
            except (ValueError, KeyError, TypeError):
                continue   # a torn or foreign line
    return max(seeds) + 1 if seeds else 0


def _mean(v):
    return sum(v) / len(v) if v else None


def _sd(v):
    if len(v) < 2:
        return None
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


# ---------------------------------------------------------------------- the command
def _on_budget(signum, frame):
    raise BudgetExceeded("SIGTERM" if signum == signal.SIGTERM else "time budget")


def check(out: Path, *, budget_minutes: float, subset=None, dry_run: bool = False,
          stages=("environment", "numerics", "throughput", "runs"), max_pairs: int = 1000,
          log=print, study_specs=(), data_dir=None, upstream_dir=None, commit=None) -> dict:
    start = time.time()
    deadline = start + budget_minutes * 60
    env_set = setup_environment()
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(command=sys.argv, dry_run=dry_run, budget_minutes=budget_minutes,
                   started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                   recipe=RECIPE, stages={})
    try:  # an earlier invocation's stages are kept (e.g. a second command with --stages runs)
        earlier = json.loads((out / "summary.json").read_text())
        summary["earlier"] = {k: earlier[k] for k in ("command", "started", "status", "code")
                              if k in earlier}
        summary["stages"] = {k: v for k, v in earlier.get("stages", {}).items()
                             if k not in stages}
    except (OSError, ValueError, AttributeError):
        pass
    from airbench_common.env import code_version
    summary["code"] = code_version()
    summary["commit"] = commit   # given from where the tree was sent: its git data may be stale
    if subset is not None:
        ident, train, test = load_subset(subset)
    elif dry_run:
        ident, train, test = synthetic_data(128, 64)
    else:
        from airbench_common.data import dataset_label, load_cifar10, resolve_data_dir
        train, test = load_cifar10("train"), load_cifar10("test")
        ident = dict(source=dataset_label(), dir=str(resolve_data_dir()), n_train=len(train[0]),
                     n_test=len(test[0]), sha256=None)
    summary["data"] = ident
    data_tmp = None
    env_data = os.environ.get("AIRBENCH_DATA")     # restored at the end (check() is a library call too)
    if subset is not None:  # numerics reads $AIRBENCH_DATA: point it at the subset's images
        data_tmp = tempfile.TemporaryDirectory(prefix="gpu_check_data_")
        np.savez(Path(data_tmp.name) / "train.npz", images=train[0], labels=train[1])
        np.savez(Path(data_tmp.name) / "test.npz", images=test[0], labels=test[1])
        (Path(data_tmp.name) / "SOURCE.md").write_text(ident["source"] + "\n")
        os.environ["AIRBENCH_DATA"] = data_tmp.name
    elif dry_run:
        os.environ["AIRBENCH_DATA"] = str(out / "no-dataset")  # numerics: synthetic images
    study_data = data_dir
    if "studies" in stages and data_dir is None and dry_run:   # smoke's 2000/1000 images
        data_tmp2 = tempfile.TemporaryDirectory(prefix="gpu_check_studies_")
        study_data = data_tmp2.name
        for split, n in (("train", 2000), ("test", 1000)):
            x, y = synthetic_data(n, 1)[1]
            np.savez(Path(study_data) / f"{split}.npz", images=x, labels=y)
    overrides = {}
    if dry_run:  # tiny: every stage in seconds on a CPU
        overrides = dict(widths=(4, 8, 8), batch_size=64, epochs=1.0)
    old = {s: signal.signal(s, _on_budget) for s in (signal.SIGTERM, signal.SIGALRM)}
    signal.alarm(max(1, int(deadline - time.time())))
    summary["status"] = "running"

    def save():
        summary["seconds"] = round(time.time() - start, 1)
        write_json(out / "summary.json", summary)

    save()
    try:
        for name in stages:
            t = time.time()
            log(f"[gpu_check] {name} ...")
            try:
                if name == "environment":
                    info = environment(env_set)
                    write_json(out / "environment.json", info)
                    res = dict(status="ok", gpu=info.get("gpu"), jax=info["jax"])
                elif name == "numerics":
                    res = numerics(out, dry_run)
                elif name == "throughput":
                    res = throughput(out, 32 if dry_run else 2000, 2 if dry_run else 5,
                                     1 if dry_run else 10, 1 / 16 if dry_run else 1.0)
                elif name == "runs":
                    res = runs(out, deadline, train, test, ident, overrides, max_pairs, log)
                elif name == "studies":
                    res = studies(out, deadline, study_specs, data_dir=data_dir or study_data,
                                  upstream_dir=upstream_dir, commit=commit, dry_run=dry_run,
                                  log=log)
                else:
                    raise ValueError(f"unknown stage {name!r}")
            except BudgetExceeded:
                summary["stages"][name] = dict(status="stopped by the budget or SIGTERM",
                                               seconds=round(time.time() - t, 1))
                raise
            except Exception as exc:  # noqa: BLE001 - one stage's failure is a result; go on
                res = dict(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
            res["seconds"] = round(time.time() - t, 1)
            summary["stages"][name] = res
            save()
            log(f"[gpu_check] {name}: {res['status']} ({res['seconds']} s)")
        summary["status"] = ("ok" if all(summary["stages"][s].get("status") == "ok"
                                         for s in stages) else "failed")
    except (BudgetExceeded, KeyboardInterrupt) as exc:
        summary["status"] = f"stopped: {exc or 'Ctrl-C'} (everything before is written)"
    finally:
        signal.alarm(0)
        for s, h in old.items():
            signal.signal(s, h)
        save()
        if data_tmp is not None:
            data_tmp.cleanup()
        if env_data is None:
            os.environ.pop("AIRBENCH_DATA", None)
        else:
            os.environ["AIRBENCH_DATA"] = env_data
    return summary


def main(argv=None) -> int:
    from airbench_common.errors import cli_main

    @cli_main
    def _main(argv=None) -> int:
        from airbench_common.cli import Parser
        ap = Parser(prog="python -m parity.gpu_check",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
        ap.add_argument("--out", default=None, help="result folder, e.g. docs/results/gpu/h100/")
        ap.add_argument("--subset", default=None, help="data subset made by --make-subset")
        ap.add_argument("--budget-minutes", type=float, default=7.5,
                        help="stop cleanly after this many minutes (default 7.5)")
        ap.add_argument("--dry-run", action="store_true",
                        help="CPU-sized, every stage and the same files: numerics at width "
                             "1/16 (forward, gradient and TTA rows), timing at batch 32, tiny "
                             "run pairs on 128 synthetic images")
        ap.add_argument("--stages", default=None,
                        help="comma-separated stages to run (default: environment, numerics, "
                             "throughput, runs; with --study: environment, studies)")
        ap.add_argument("--max-pairs", type=int, default=None,
                        help="most run pairs of the runs stage (default 1000; 2 with --dry-run)")
        ap.add_argument("--study", action="append", default=[], metavar="RECIPE:ARMS:RUNS",
                        help="the studies stage: a parity.compare study on all the data "
                             "(--data-dir, e.g. the carried jpeg/ folder's parent), e.g. "
                             "airbench94_muon:jax,torch,upstream:10; repeatable, run in order, "
                             "sharing the budget")
        ap.add_argument("--upstream-dir", default=None,
                        help="studies: the folder holding upstream's scripts "
                             "(airbench94_muon.py, airbench96_faster.py)")
        ap.add_argument("--commit", default=None,
                        help="the commit of the tree that runs (recorded; the copy's git data "
                             "may be stale)")
        ap.add_argument("--make-subset", default=None, metavar="PATH",
                        help="write the data subset to PATH and exit")
        ap.add_argument("--train", type=int, default=15000, help="--make-subset: training images")
        ap.add_argument("--test", type=int, default=2000, help="--make-subset: test images")
        ap.add_argument("--data-dir", default=None,
                        help="--make-subset and the studies: CIFAR-10 folder")
        a = ap.parse_args(argv)
        from airbench_common.errors import UsageError
        if a.make_subset:
            info = make_subset(a.make_subset, a.train, a.test, a.data_dir)
            print(json.dumps(info, indent=1))
            return 0
        if not a.out:
            raise UsageError("--out DIR is required (e.g. docs/results/gpu/h100/)")
        if not a.budget_minutes > 0:
            raise UsageError(f"--budget-minutes {a.budget_minutes} must be > 0")
        if a.max_pairs is None:   # a dry run stops after a few pairs by itself
            a.max_pairs = 2 if a.dry_run else 1000
        if a.max_pairs < 1:
            raise UsageError(f"--max-pairs {a.max_pairs} must be at least 1 (run pairs)")
        specs = [parse_study(t) for t in a.study]
        if a.stages is None:
            a.stages = ("environment,studies" if specs
                        else "environment,numerics,throughput,runs")
        from airbench_common.validate import check_out_dir
        check_out_dir(a.out)  # a file, a read-only place: one line now, not a traceback later
        stages = tuple(s for s in a.stages.split(",") if s)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise UsageError(f"--stages {bad} unknown; accepted: {', '.join(STAGES)}")
        if "studies" in stages and not specs:
            raise UsageError("the studies stage needs at least one --study RECIPE:ARMS:RUNS")
        if specs and not a.dry_run and a.data_dir is None:
            raise UsageError("--study needs --data-dir (all the data: e.g. the folder holding "
                             "the carried jpeg/)")
        if a.upstream_dir is not None and not Path(a.upstream_dir).is_dir():
            raise UsageError(f"--upstream-dir {a.upstream_dir}: not a folder")
        s = check(Path(a.out), budget_minutes=a.budget_minutes, subset=a.subset,
                  dry_run=a.dry_run, stages=stages, max_pairs=a.max_pairs,
                  log=lambda m: print(m, file=sys.stderr, flush=True), study_specs=specs,
                  data_dir=a.data_dir, upstream_dir=a.upstream_dir, commit=a.commit)
        print(json.dumps({k: s[k] for k in ("status", "seconds", "stages")}, indent=1,
                         default=str))
        return 0 if s["status"] == "ok" else 1

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
