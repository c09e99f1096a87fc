"""Where a CifarNet training step spends its time, per layer and per pass, JAX beside PyTorch.

    python benchmarks/profile_step.py [--batch 500] [--reps 5] [--impls native,matmul,hybrid]
                                      [--recipe airbench94_muon] [--json out.json]

Each piece is timed in isolation (a jitted JAX function; the same PyTorch op on channels_last
tensors): every 3x3 conv's forward, input gradient (dx) and weight gradient (dw) per JAX conv
implementation; BatchNorm(train)+GELU forward+backward; max-pool forward+backward; Newton-Schulz
per filter shape; the whole optimizer update; and the whole train step. Variants alternate rep by
rep and the minimum is reported (the least disturbed run: this machine is shared). float32.
Times in ms per batch. The tables in docs/perf/ come from this script.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402


def conv_layers(recipe):
    """(name, spatial size, cin, cout) of every 3x3 conv of the recipe's net."""
    w1, w2, w3 = recipe.widths
    out, cin, hw = [], 24, 31
    for g, w in enumerate((w1, w2, w3), 1):
        out.append((f"g{g}.conv1", hw, cin, w))
        hw //= 2
        for d in range(2, recipe.depth + 1):
            out.append((f"g{g}.conv{d}", hw, w, w))
        cin = w
    return out


def interleaved(fns: dict, reps: int) -> dict:
    """{name: min ms} over `reps` alternating calls of each zero-arg fn (after one warm call)."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * min(v) for k, v in times.items()}


def _jax_call(fn, *args):
    import jax
    jf = jax.jit(fn)

    def run():
        jax.block_until_ready(jf(*args))
    return run


def profile(recipe_name="airbench94_muon", batch=500, reps=5, impls=("native", "matmul", "hybrid"),
            log=print) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    import airbench_jax as aj
    import airbench_torch as at
    from airbench_common import get_recipe
    from airbench_jax import conv as jconv
    from airbench_jax.model import gelu, maxpool
    from airbench_jax.muon import flatten_filter, newton_schulz
    from airbench_torch.optim import newton_schulz as t_newton_schulz

    r = get_recipe(recipe_name, batch_size=batch, epochs=1000)
    rows = []
    key = jax.random.PRNGKey(0)
    rng = np.random.default_rng(0)
    cl = torch.channels_last

    def add(layer, piece, res):
        rows.append(dict(layer=layer, piece=piece, **{k: round(v, 2) for k, v in res.items()}))
        log(f"{layer:10s} {piece:14s} " + "  ".join(f"{k} {v:8.1f}" for k, v in res.items()))

    for name, hw, cin, cout in conv_layers(r):
        xn = rng.standard_normal((batch, hw, hw, cin), dtype=np.float32)
        wn = (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.05)
        gn = rng.standard_normal((batch, hw, hw, cout), dtype=np.float32)
        x, w, g = jnp.asarray(xn), jnp.asarray(wn), jnp.asarray(gn)
        tx = torch.from_numpy(xn.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=cl)
        tw = torch.from_numpy(wn.transpose(3, 2, 0, 1).copy()).contiguous(memory_format=cl)
        tg = torch.from_numpy(gn.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=cl)

        def t_bwd(mask):
            def run():
                torch.ops.aten.convolution_backward(tg, tx, tw, None, [1, 1], [1, 1], [1, 1],
                                                    False, [0, 0], 1, mask)
            return run
        passes = {"fwd": {"torch": lambda: F.conv2d(tx, tw, padding=1)},
                  "dx": {"torch": t_bwd([True, False, False])},
                  "dw": {"torch": t_bwd([False, True, False])}}
        for impl in impls:
            c = jconv._CONVS[impl]
            passes["fwd"][impl] = _jax_call(lambda x, w, c=c: c(x, w), x, w)
            passes["dx"][impl] = _jax_call(
                lambda x, w, g, c=c: jax.vjp(lambda x_: c(x_, w), x)[1](g)[0], x, w, g)
            passes["dw"][impl] = _jax_call(
                lambda x, w, g, c=c: jax.vjp(lambda w_: c(x, w_), w)[1](g)[0], x, w, g)
        with torch.no_grad():
            for p, fns in passes.items():
                add(name, "conv " + p, interleaved(fns, reps))

        # BatchNorm(train) + GELU, forward and backward, on this conv's (pooled) output
        ohw = hw // 2 if name.endswith("conv1") else hw
        bn = rng.standard_normal((batch, ohw, ohw, cout), dtype=np.float32)
        xb = jnp.asarray(bn)
        bias = jnp.zeros((cout,), jnp.float32)

        def j_bn(x, b):
            mean = x.mean(axis=(0, 1, 2))
            var = jnp.square(x - mean).mean(axis=(0, 1, 2))
            return gelu((x - mean) * jax.lax.rsqrt(var + r.bn_eps) + b)
        j_bn_grad = jax.grad(lambda x, b: j_bn(x, b).sum(), argnums=(0, 1))
        txb = torch.from_numpy(bn.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=cl)
        tbias = torch.zeros(cout, requires_grad=True)
        rm, rv = torch.zeros(cout), torch.ones(cout)

        def t_bn():
            xx = txb.detach().requires_grad_(True)
            y = F.gelu(F.batch_norm(xx, rm, rv, None, tbias, True, 0.4, r.bn_eps))
            y.sum().backward()
        add(name, "bn+gelu f+b", interleaved({"torch": t_bn, "jax": _jax_call(j_bn_grad, xb, bias)},
                                               reps))
        if name.endswith("conv1"):
            pn = rng.standard_normal((batch, hw, hw, cout), dtype=np.float32)
            xp = jnp.asarray(pn)
            tp = torch.from_numpy(pn.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=cl)

            def t_pool():
                xx = tp.detach().requires_grad_(True)
                F.max_pool2d(xx, 2).sum().backward()
            add(name, "maxpool f+b", interleaved(
                {"torch": t_pool, "jax": _jax_call(jax.grad(lambda x: maxpool(x, 2).sum()), xp)},
                reps))
        # Newton-Schulz of this filter's gradient (the Muon update's matmuls)
        wg = jnp.asarray(wn)
        twg = torch.from_numpy(wn.transpose(3, 2, 0, 1).reshape(cout, -1).copy())
        with torch.no_grad():
            add(name, "newton-schulz", interleaved(
                {"torch": lambda: t_newton_schulz(twg, r.muon_ns_steps, r.muon_eps),
                 "jax": _jax_call(lambda m: newton_schulz(flatten_filter(m), r.muon_ns_steps,
                                                          r.muon_eps), wg)}, reps))

    # whole optimizer update and whole step
    images = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    x, y = jnp.asarray(images), jnp.asarray(labels.astype(np.int32))
    tx = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=cl)
    ty = torch.from_numpy(labels.astype(np.int64))
    tstate = at.make_train_state(r, batch * 50, tx[:64], seed=0, device="cpu", channels_last=True)
    at.train_step(tstate, tx, ty)
    for p in tstate.net.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)

    def t_opt():
        for opt in tstate.optimizers:
            opt.step()
    steps = {"torch": lambda: at.train_step(tstate, tx, ty)}
    opts = {"torch": t_opt}
    for impl in impls:
        st = aj.init_train_state(r, batch * 50, key, whiten_images=x[:64], conv_impl=impl)
        grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape, p.dtype), st.params)
        opts[impl] = _jax_call(lambda g, s: st.tx.update(g, s, st.params), grads, st.opt_state)
        compiled = aj.train_step.lower(st, x, y).compile()
        box = [st]

        def run(box=box, compiled=compiled):
            box[0], loss = compiled(box[0], x, y)
            loss.block_until_ready()
        steps[impl] = run
    add("all", "optimizer", interleaved(opts, reps))
    add("all", "train step", interleaved(steps, reps))
    from airbench_jax.cpu import cpu_info
    return dict(recipe=recipe_name, batch=batch, reps=reps, impls=list(impls), rows=rows,
                cpu=cpu_info(), load_average=os.getloadavg(),
                XLA_FLAGS=os.environ.get("XLA_FLAGS", ""), torch_threads=torch.get_num_threads())


def markdown(res: dict) -> str:
    """The rows as a markdown table plus per-pass sums (ms per batch, min over reps)."""
    cols = ["torch"] + list(res["impls"])
    lines = ["| layer | piece | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    sums: dict = {}
    for row in res["rows"]:
        vals = [row.get(c, row.get("jax")) for c in cols]
        lines.append(f"| {row['layer']} | {row['piece']} | "
                     + " | ".join("" if v is None else f"{v:.0f}" for v in vals) + " |")
        if row["layer"] != "all":
            acc = sums.setdefault(row["piece"], [0.0] * len(cols))
            for i, v in enumerate(vals):
                acc[i] += v or 0.0
    for piece, acc in sums.items():
        lines.append(f"| **sum** | {piece} | " + " | ".join(f"**{v:.0f}**" for v in acc) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="airbench94_muon")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--impls", default="native,matmul,hybrid")
    p.add_argument("--json")
    p.add_argument("--markdown", metavar="JSON", help="only print the table of an earlier --json")
    a = p.parse_args(argv)
    if a.markdown:
        with open(a.markdown) as f:
            print(markdown(json.load(f)))
        return 0
    res = profile(a.recipe, a.batch, a.reps, tuple(a.impls.split(",")))
    print(markdown(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
