"""Training throughput of the JAX port against the PyTorch reference, in the same run: the one
throughput benchmark (`python -m parity.gpu_check`'s throughput stage calls `bench` too).

    python -m parity.bench [--recipe airbench94_muon] [--batch 2000] [--steps 3] [--reps 3]
                           [--conv-impl auto] [--torch-channels-last auto|on|off|both]
                           [--json out.json]

Both frameworks take full optimizer steps (forward, backward, optimizer, schedules) of the
recipe's net on the same random normalized batch, through their workloads' trainers
(airbench_common.workload: `from_init`, then `stepper`), each on its default device (PyTorch:
CUDA if there is one) in that device's default precision policy.
JAX's step is compiled first and its compile time reported separately, and every stepper's first
call (cuDNN's algorithm choice, allocators) is timed apart; the frameworks alternate rep by rep so
machine noise hits both alike, and each rep runs its steps as a run's loop does, waiting for the
device once at its end. Reported: images/s per framework (median over reps), the JAX/PyTorch
ratio, achieved GFLOP/s (3x the forward FLOPs of the convs and head per image) and the fraction of
this machine's float32 matmul peak (a large JAX matmul).
`--torch-channels-last both` times PyTorch in both memory formats in the same run ("torch" is the
policy's format, "torch_channels_last" or "torch_contiguous" the other one): the measurement
behind the CPU memory-format policy in airbench_torch/device.py.

Also reported per stepper: the process's minor page faults per step (fresh memory the kernel had
to map and zero). They explain `--scan`'s difference: XLA:CPU allocates a compiled program's
temporary buffer (hundreds of MB for airbench94_muon) at every call and frees it after, so
per-step calls fault it in and zero it at every step, while one `lax.scan` program (as
`train_epoch` runs a whole epoch) pays that once per call. And JAX's convolution lowering, with
oneDNN's version and the kernels it chose where that lowering is 'onednn'.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time

import numpy as np

from airbench_common import get_recipe, parse_overrides
from airbench_common.env import code_version, machine_info, package_versions
from airbench_common.errors import cli_main
from airbench_common.validate import OptionError
from airbench_common.workload import RunOptions, get_workload

from .args import CONV_IMPLS


def forward_flops(recipe) -> float:
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass: convs and head."""
    w1, w2, w3 = recipe.widths
    extra = recipe.depth - 2            # depth 3 adds one more conv per group
    f = 31 * 31 * 12 * 24                                   # whitening 2x2x3 -> 24
    f += 31 * 31 * 24 * 9 * w1 + (1 + extra) * 15 * 15 * w1 * 9 * w1
    f += 15 * 15 * w1 * 9 * w2 + (1 + extra) * 7 * 7 * w2 * 9 * w2
    f += 7 * 7 * w2 * 9 * w3 + (1 + extra) * 3 * 3 * w3 * 9 * w3
    f += w3 * 10
    return 2.0 * f


def matmul_peak_gflops(n: int = 2048, iters: int = 5) -> float:
    """This machine's float32 matmul rate in GFLOP/s (a large JAX matmul): the fastest of `iters`
    timed calls. Other work on the machine only ever slows a call, so the fastest is the estimate
    of the peak; a mean over the calls underestimated it on a loaded machine, and a net's step
    timed in a quieter moment then ran at more than 100% of it."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


TORCH_CHANNELS_LAST = ("auto", "on", "off", "both")
MAX_BATCH = 10000  # images per step; five times the default, far past what a benchmark needs


def torch_formats(choice: str, policy: bool) -> dict:
    """{stepper name: channels_last} for --torch-channels-last, where `policy` is the device's
    own memory format (channels_last or not); "torch" is always there."""
    if choice not in TORCH_CHANNELS_LAST:
        raise ValueError(f"torch_channels_last {choice!r} is not one of "
                         f"{', '.join(TORCH_CHANNELS_LAST)}")
    if choice != "both":
        return {"torch": {"auto": None, "on": True, "off": False}[choice]}
    return {"torch": policy, "torch_" + ("contiguous" if policy else "channels_last"): not policy}


def torch_stepper(r, n_train: int, x_nhwc, y, device, policy, channels_last):
    """A function running n PyTorch train steps on (x, y), then waiting for the device: as a
    run's loop, nothing waits inside (Trainer.stepper)."""
    trainer = get_workload("torch").from_init(r, n_train, x_nhwc, seed=0, device=device,
                                              precision=policy, channels_last=channels_last)
    return trainer.stepper(x_nhwc, y)[0]


def jax_stepper(r, n_train: int, x_nhwc, y, policy, conv_impl: str, scan_steps: int = 0):
    """(a function running n calls of JAX's compiled train_step on (x, y), then waiting for the
    device; its compile seconds). scan_steps=k: each call is k steps as one `lax.scan` program,
    as `train_epoch` runs them."""
    trainer = get_workload("jax").from_init(r, n_train, x_nhwc, seed=0, precision=policy,
                                            conv_impl=conv_impl)
    return trainer.stepper(x_nhwc, y, scan_steps=scan_steps)


def bench(recipe="airbench94_muon", batch=2000, steps=3, reps=3, conv_impl="auto",
          overrides=None, log=print, torch_channels_last="auto", scan=False,
          device=None) -> dict:
    """Images/s of both frameworks (see the module docstring). `recipe`: a name or a Recipe;
    `device`: PyTorch's (None: CUDA if there is one, else the CPU; JAX runs on its default
    backend). scan=True also times JAX as one `lax.scan` program of `steps` steps per rep
    ("jax_scan"), the way `train_epoch` runs, beside the per-step `train_step` calls ("jax")."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    r = get_recipe(recipe, **(overrides or {}), batch_size=batch, epochs=1000)
    n_train = batch * 50                # long enough a schedule that steps never run out
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    torch_info = torch_wl.backend_info(device)
    dev = torch_info["device"]
    tpol, jpol = torch_wl.precision(RunOptions(device=dev)), jax_wl.precision(RunOptions())
    torch_wl.set_precision(tpol)
    formats = torch_formats(torch_channels_last, torch_info["channels_last"])
    steppers = {name: torch_stepper(r, n_train, images, labels, dev, tpol, cl)
                for name, cl in formats.items()}
    steppers["jax"], compile_seconds = jax_stepper(r, n_train, images, labels, jpol, conv_impl)
    calls = {k: steps for k in steppers}
    compile_all = {"jax": compile_seconds}
    if scan:
        steppers["jax_scan"], compile_all["jax_scan"] = jax_stepper(
            r, n_train, images, labels, jpol, conv_impl, scan_steps=steps)
        calls["jax_scan"] = 1
    first_call = {}
    for name, fn in steppers.items():   # first-call work outside the timings
        t = time.perf_counter()
        fn(1)
        first_call[name] = time.perf_counter() - t
    load_before = os.getloadavg()
    rates = {k: [] for k in steppers}
    faults = {k: [] for k in steppers}
    for rep in range(reps):
        for name, fn in steppers.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            fn(calls[name])
            rates[name].append(batch * steps / (time.perf_counter() - t))
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps)
            log(f"rep {rep}: {name:5s} {rates[name][-1]:7.1f} img/s")
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in rates.items()}
    peak = matmul_peak_gflops()
    flops = 3 * forward_flops(r)
    impl = jax_wl.conv_impl(conv_impl)
    jax_info = jax_wl.backend_info(conv_impl=impl, recipe=r, batch=batch)
    extra = {}
    if scan:
        extra["ratio_jax_scan_over_step"] = med["jax_scan"] / med["jax"]
    if len(formats) == 2:
        by_format = {cl: med[name] for name, cl in formats.items()}
        extra["ratio_torch_channels_last_over_contiguous"] = by_format[True] / by_format[False]
    return dict(
        recipe=recipe if isinstance(recipe, str) else r.name, widths=list(r.widths), batch=batch,
        steps_per_rep=steps, reps=reps, dtype=tpol.compute,
        data="synthetic normal(0, 1) images", device=dev, jax_device=jax_info["device"],
        precision=dict(torch=tpol.to_dict(), jax=jpol.to_dict()),
        torch_channels_last=formats, **extra,
        conv_impl=impl, onednn=jax_info["onednn"], images_per_second=med,
        all_rates=rates, page_faults_per_step={k: statistics.median(v) for k, v in faults.items()},
        ratio_jax_over_torch=med["jax"] / med["torch"],
        ratios_jax_over={k: med["jax"] / v for k, v in med.items() if k.startswith("torch")},
        jax_compile_seconds=compile_seconds, compile_seconds=compile_all,
        first_call_seconds=first_call,
        rate_spread={k: (max(v) - min(v)) / statistics.median(v) for k, v in rates.items()},
        load_average=dict(before=load_before, after=load_after), cpu=jax_info["cpu"],
        XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
        timing="frameworks alternate rep by rep; each rep runs steps_per_rep train steps and then "
               "waits for the device (torch.cuda.synchronize / jax.block_until_ready); compile "
               "and first calls excluded",
        gflops={k: v * flops / 1e9 for k, v in med.items()}, matmul_peak_gflops=peak,
        fraction_of_peak={k: v * flops / 1e9 / peak for k, v in med.items()},
        versions=package_versions("jax", "jaxlib", "flax", "optax", "torch", "onednn-cpu-gomp"),
        code=code_version(), machine=machine_info())


@cli_main
def main(argv=None) -> int:
    from . import args as A  # noqa: PLC0415
    p = A.parser("python -m parity.bench", __doc__.split("\n")[0])
    p.add_argument("--recipe", default="airbench94_muon")
    p.add_argument("--batch", type=int, default=2000, help=f"images per step (1 to {MAX_BATCH})")
    p.add_argument("--steps", type=int, default=3, help="steps per timed rep")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--conv-impl", default="auto", choices=CONV_IMPLS,
                   help="JAX convolution lowering (default: $AIRBENCH_JAX_CONV, else per backend)")
    p.add_argument("--scan", action="store_true",
                   help="also time JAX's steps as one lax.scan program (as train_epoch runs)")
    p.add_argument("--torch-channels-last", default="auto", choices=TORCH_CHANNELS_LAST,
                   help="PyTorch memory format: the device policy, on, off, or both (timed "
                        "side by side)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    # -- every option and the output path before any timing
    overrides = parse_overrides(a.set)
    for key, option in (("batch_size", "--batch"), ("epochs", "--steps")):
        if key in overrides:
            raise OptionError(f"--set {key}=... is fixed by the benchmark; use {option}")
    a.batch = A.count("--batch", a.batch, high=MAX_BATCH)
    a.steps = A.count("--steps", a.steps, high=1000)
    a.reps = A.count("--reps", a.reps, high=100)
    A.check_recipe(a.recipe, option="--recipe")
    get_recipe(a.recipe, **overrides, batch_size=a.batch, epochs=1000)
    A.out_file(a.json)
    res = bench(a.recipe, a.batch, a.steps, a.reps, a.conv_impl, overrides,
                torch_channels_last=a.torch_channels_last, scan=a.scan)
    ips = res["images_per_second"]
    summary = get_workload("jax").backend_info()["summary"]
    print(f"{a.recipe} batch {a.batch} {res['precision']['torch']['name']} on {summary}")
    la = res["load_average"]
    print(f"  load average (1 min) {la['before'][0]:.1f} before, {la['after'][0]:.1f} after "
          f"the timed reps; XLA_FLAGS={res['XLA_FLAGS']!r}")
    for k in ips:
        print(f"  {k:16s} {ips[k]:7.1f} img/s  {res['gflops'][k]:6.1f} GFLOP/s  "
              f"{100 * res['fraction_of_peak'][k]:4.1f}% of matmul peak "
              f"({res['matmul_peak_gflops']:.1f} GFLOP/s), reps spread "
              f"{100 * res['rate_spread'][k]:.0f}%")
    dnnl = res["onednn"]
    version = dnnl["version"].split(" (")[0]
    lowering = res["conv_impl"] + (f", oneDNN {version}: {dnnl['kernels_first_conv']}"
                                   if res["conv_impl"] == "onednn" else
                                   "" if dnnl["available"] else f"; oneDNN: {dnnl['reason']}")
    print("  ratio jax/" + ", jax/".join(f"{k} {v:.2f}" for k, v in res["ratios_jax_over"].items())
          + f"; jax compile {res['jax_compile_seconds']:.1f} s (conv_impl {lowering})")
    mb = {k: v * resource.getpagesize() / 1e6 for k, v in res["page_faults_per_step"].items()}
    print("  fresh memory faulted in per step: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in mb.items()))
    if "ratio_jax_scan_over_step" in res:
        print(f"  ratio jax lax.scan program / per-step calls "
              f"{res['ratio_jax_scan_over_step']:.2f} (see the faulted-in memory above)")
    if "ratio_torch_channels_last_over_contiguous" in res:
        print(f"  ratio torch channels_last/contiguous "
              f"{res['ratio_torch_channels_last_over_contiguous']:.2f}")
    if a.json:
        from airbench_common.records import write_json_atomic
        write_json_atomic(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
