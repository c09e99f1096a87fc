"""Train-step throughput of CifarNet's convolution implementations on this machine.

Measures, for the airbench94 net at the given width and batch (float32): images/s of a full
training step (forward + backward + SGD update; compile excluded) for conv_impl 'native'
(lax.conv_general_dilated) and 'matmul' (im2col + one matmul), and for the same net in PyTorch
(written inline with torch.nn.functional; this file is a benchmark, the package never imports
torch). Reports GFLOP/s (conv + head FLOPs, 3x forward for a training step) and the fraction of
the matmul peak, measured with a large float32 matmul in JAX.

  python benchmarks/bench_conv_jax.py [--batch 500] [--iters 3] [--widths 64,256,256] [--no-torch]
XLA flags are read from $XLA_FLAGS (set it before running to compare, e.g. --xla_cpu_use_onednn=true).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


from airbench_common import get_recipe  # noqa: E402
from parity.bench import forward_flops, matmul_peak_gflops as matmul_peak  # noqa: E402


def conv_flops(widths, batch):
    """Forward FLOPs of the airbench94 net at `widths` for a whole batch."""
    return forward_flops(get_recipe("airbench94", widths=tuple(widths))) * batch


def bench_jax(impl, widths, batch, iters):
    from airbench_common import get_recipe
    from airbench_jax import augment as aug
    from airbench_jax.state import init_train_state, train_step
    r = get_recipe("airbench94", widths=widths, batch_size=batch)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    x = aug.normalize(imgs)
    st = init_train_state(r, batch * 100, jax.random.PRNGKey(0), whiten_images=x, conv_impl=impl)
    t = time.perf_counter()
    step = train_step.lower(st, x, y).compile()
    compile_s = time.perf_counter() - t
    st, loss = step(st, x, y)
    loss.block_until_ready()
    t = time.perf_counter()
    for _ in range(iters):
        st, loss = step(st, x, y)
    loss.block_until_ready()
    return batch * iters / (time.perf_counter() - t), compile_s


def bench_torch(widths, batch, iters):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    w1, w2, w3 = widths
    shapes = [(24, 3, 2, 2)] + [(w1, 24, 3, 3), (w1, w1, 3, 3), (w2, w1, 3, 3), (w2, w2, 3, 3),
                                (w3, w2, 3, 3), (w3, w3, 3, 3)]
    ws = [torch.randn(s) * 0.1 for s in shapes]
    for w in ws[1:]:
        w.requires_grad_(True)
    bias = [torch.zeros(s[0], requires_grad=True) for s in shapes]
    head = (torch.randn(10, w3) * 0.1).requires_grad_(True)
    params = ws[1:] + bias + [head]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.85, nesterov=True, weight_decay=1e-4)
    means = [torch.zeros(s[0]) for s in shapes]
    vars_ = [torch.ones(s[0]) for s in shapes]

    def fwd(x):
        x = F.gelu(F.conv2d(x, ws[0], bias[0]))
        for g in range(3):
            i = 1 + 2 * g
            x = F.conv2d(x, ws[i], padding="same")
            x = F.max_pool2d(x, 2)
            x = F.gelu(F.batch_norm(x, means[i], vars_[i], None, bias[i], True, 0.4, 1e-12))
            x = F.conv2d(x, ws[i + 1], padding="same")
            x = F.gelu(F.batch_norm(x, means[i + 1], vars_[i + 1], None, bias[i + 1], True, 0.4, 1e-12))
        x = F.max_pool2d(x, 3).flatten(1)
        return F.linear(x, head) / 9

    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = F.cross_entropy(fwd(x), y, label_smoothing=0.2, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return batch * iters / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--impls", default="matmul,native")
    p.add_argument("--no-torch", action="store_true")
    a = p.parse_args()
    widths = tuple(int(v) for v in a.widths.split(","))
    flops = 3 * conv_flops(widths, a.batch)  # fwd + 2x for backward
    peak = matmul_peak()
    out = dict(batch=a.batch, widths=widths, XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
               matmul_peak_gflops=round(peak, 1), results={})
    for impl in a.impls.split(","):
        ips, cs = bench_jax(impl, widths, a.batch, a.iters)
        g = ips / a.batch * flops / 1e9
        out["results"][f"jax-{impl}"] = dict(img_s=round(ips, 1), compile_s=round(cs, 1),
                                             gflops=round(g, 1), frac_peak=round(g / peak, 3))
        print(impl, out["results"][f"jax-{impl}"], flush=True)
    if not a.no_torch:
        ips = bench_torch(widths, a.batch, a.iters)
        g = ips / a.batch * flops / 1e9
        out["results"]["torch"] = dict(img_s=round(ips, 1), gflops=round(g, 1),
                                       frac_peak=round(g / peak, 3))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
