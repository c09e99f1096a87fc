"""Where one whole training step spends its time, op by op, JAX beside PyTorch.

    python benchmarks/trace_step.py [--recipe airbench94_muon] [--batch 500] [--steps 2]
                                    [--top 25] [--json out.json] [--markdown]

`benchmarks/profile_step.py` times each piece of a step in isolation; this script profiles the
whole compiled step as training runs it, so fusion, buffer reuse and the layouts XLA chose are
all included. JAX: `jax.profiler` traces `--steps` calls of the compiled `train_step`, and each
traced XLA op (a fusion, a library GEMM, a copy) is joined with the compiled HLO to say what it
computes (its root op and output shape; for a matmul, M x K x N and the pass it belongs to).
PyTorch: `torch.profiler` over the same number of `train_step` calls on the same batch, self CPU
time per aten op. Times are per step. float32, the CPU policy of each side.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from airbench_common import validate as V  # noqa: E402
from airbench_common.cli import Parser  # noqa: E402
from airbench_common.errors import cli_main  # noqa: E402

INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* (\w+)\((.*?)\)(.*)$")
CALLS = re.compile(r"calls=%([\w.\-]+)")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """({instruction: (dtype, shape, opcode, operands, attrs)}, {computation: root instruction})."""
    instrs, roots, comp = {}, {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            comp = line.split()[0].lstrip("%")
            if comp == "ENTRY":
                comp = line.split()[1].lstrip("%")
            continue
        m = INSTR.match(line)
        if not m:
            continue
        name, dtype, shape, opcode, operands, attrs = m.groups()
        shape = tuple(int(s) for s in shape.split(",") if s)
        ops = re.findall(r"%([\w.\-]+)", operands)
        instrs[name] = (dtype, shape, opcode, ops, attrs)
        if line.lstrip().startswith("ROOT") and comp:
            roots[comp] = name
    return instrs, roots


def describe_op(name: str, instrs: dict, roots: dict) -> tuple[str, str]:
    """(what, shape) of a traced op: a fusion is described by its fused computation's root."""
    if name not in instrs:
        return "", ""
    dtype, shape, opcode, ops, attrs = instrs[name]
    what = opcode
    if opcode == "dot" and len(ops) == 2 and ops[0] in instrs and ops[1] in instrs:
        what = f"dot {gemm_dims(instrs[ops[0]][1], instrs[ops[1]][1], attrs)}"
    m = CALLS.search(attrs)
    if opcode == "fusion" and m and m.group(1) in roots:
        root = roots[m.group(1)]
        rdt, rshape, ropc, rops, rattrs = instrs[root]
        what = ropc
        if ropc == "dot" and len(rops) == 2:
            a, b = instrs.get(rops[0]), instrs.get(rops[1])
            if a and b:
                what = f"dot {gemm_dims(a[1], b[1], rattrs)}"
    return what, "x".join(map(str, shape))


def gemm_dims(a_shape, b_shape, attrs) -> str:
    lc = re.search(r"lhs_contracting_dims=\{(\d+)\}", attrs)
    rc = re.search(r"rhs_contracting_dims=\{(\d+)\}", attrs)
    if not (lc and rc) or len(a_shape) != 2 or len(b_shape) != 2:
        return ""
    k = a_shape[int(lc.group(1))]
    m = a_shape[1 - int(lc.group(1))]
    n = b_shape[1 - int(rc.group(1))]
    return f"M{m} K{k} N{n}"


def gemm_pass(what: str, widths) -> str:
    """Which pass a conv GEMM belongs to, from its dims: forward (K = 9 cin, N = cout), input
    gradient (K = cout, N = 9 cin: the im2col columns' gradient) or weight gradient (K = the
    batch's output pixels, contracted away)."""
    m = re.search(r"M(\d+) K(\d+) N(\d+)", what)
    if not m:
        return ""
    M, K, N = map(int, m.groups())
    cols = {9 * c for c in {24, *widths}}
    if K in cols and N in widths:
        return "conv fwd"
    if K in widths and N in cols:
        return "conv dx"
    if {M, N} & cols and {M, N} & set(widths) and K not in cols | set(widths):
        return "conv dw"
    return "matmul"


def random_batch(batch: int):
    """One normalized-looking NHWC batch and its labels, the same for both frameworks."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, 32, 32, 3), dtype=np.float32),
            rng.integers(0, 10, batch).astype(np.int32))


def jax_profile(recipe, x, y, steps: int, conv_impl: str):
    import jax
    import jax.numpy as jnp
    from airbench_jax import train_step
    from airbench_jax.conv import resolve_impl
    from airbench_common.workload import get_workload
    batch = len(x)
    trainer = get_workload("jax").from_init(recipe, batch * 50, x, conv_impl=conv_impl)
    impl = resolve_impl(conv_impl)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    compiled = train_step.lower(trainer.state, xj, yj).compile()
    instrs, roots = parse_hlo(compiled.as_text())
    state = trainer.state
    for _ in range(2):
        state, loss = compiled(state, xj, yj)
    loss.block_until_ready()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t = time.perf_counter()
            for _ in range(steps):
                state, loss = compiled(state, xj, yj)
            loss.block_until_ready()
            wall = (time.perf_counter() - t) / steps
        path = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)[0]
        events = json.load(gzip.open(path))["traceEvents"]
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instrs:
            total[e["name"]] += e.get("dur", 0) / 1e3 / steps
    # only im2col lowerings make convolutions into GEMMs; with oneDNN every dot is Newton-Schulz,
    # the head or the whitening
    conv_gemms = impl in ("matmul", "hybrid")
    rows = []
    for name, ms in total.items():
        what, shape = describe_op(name, instrs, roots)
        rows.append(dict(op=name, ms=ms, what=what, shape=shape,
                         part=(gemm_pass(what, recipe.widths) if conv_gemms else "")
                         or part_of(what)))
    rows.sort(key=lambda r: -r["ms"])
    # not traced as ops: XLA's own dot kernels (seen at their launch only) and the oneDNN
    # convolutions' custom calls (not traced at all), so their time shows up here
    untraced = ("unattributed: oneDNN convolutions (custom calls) and untraced time"
                if impl == "onednn" else "unattributed")
    rows.append(dict(op="(step wall time not covered by a traced op)", what="", shape="",
                     part=untraced, ms=max(0.0, 1e3 * wall - sum(r["ms"] for r in rows))))
    return dict(step_ms=1e3 * wall, ops=rows)


def part_of(what: str) -> str:
    """A coarse label for a non-GEMM op."""
    if what.startswith("dot"):
        return "matmul"
    if what == "concatenate":
        return "im2col (concatenate)"
    if what in ("add", "pad", "slice", "bitcast"):
        return "copy / col2im / pad"
    if what in ("reduce", "reduce-window", "select-and-scatter"):
        return "reduce / pool"
    return "elementwise / other"


def torch_profile(recipe, x, y, steps: int):
    from torch.profiler import ProfilerActivity, profile
    from airbench_common.workload import get_workload
    step, _ = get_workload("torch").from_init(recipe, len(x) * 50, x).stepper(x, y)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t) / steps
    rows = [dict(op=e.key, ms=e.self_cpu_time_total / 1e3 / steps, calls=e.count // steps)
            for e in prof.key_averages()]
    rows.sort(key=lambda r: -r["ms"])
    return dict(step_ms=1e3 * wall, ops=rows)


def by_part(rows) -> dict:
    out = collections.Counter()
    for r in rows:
        out[r["part"]] += r["ms"]
    return dict(out.most_common())


def markdown(res: dict, top: int) -> str:
    j, t = res["jax"], res["torch"]
    lines = [f"JAX step {j['step_ms']:.0f} ms (traced ops sum {sum(r['ms'] for r in j['ops']):.0f}),"
             f" PyTorch step {t['step_ms']:.0f} ms; batch {res['batch']}, {res['cpu']}", "",
             "| JAX: part | ms/step |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in by_part(j["ops"]).items()]
    lines += ["", "| JAX op | what | output | part | ms/step |", "|---|---|---|---|---:|"]
    lines += [f"| {r['op']} | {r['what']} | {r['shape']} | {r['part']} | {r['ms']:.1f} |"
              for r in j["ops"][:top]]
    lines += ["", "| PyTorch op | calls/step | self ms/step |", "|---|---:|---:|"]
    lines += [f"| {r['op']} | {r['calls']} | {r['ms']:.1f} |" for r in t["ops"][:top]]
    return "\n".join(lines)


@cli_main
def main(argv=None) -> int:
    p = Parser(prog="python benchmarks/trace_step.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="airbench94_muon")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--conv-impl", default="auto")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    a = p.parse_args(argv)
    from airbench_common import get_recipe
    from airbench_jax.conv import IMPLS, resolve_impl
    from airbench_jax.cpu import describe
    # -- every option and the output path before any tracing
    a.batch = V.integer("--batch", a.batch, low=1, high=10000)
    a.steps = V.integer("--steps", a.steps, low=1, high=100)
    a.top = V.integer("--top", a.top, low=1)
    V.check_choice("--conv-impl", a.conv_impl, IMPLS)
    r = get_recipe(a.recipe, batch_size=a.batch, epochs=1000)
    if a.json is not None:
        V.check_out_file(a.json, "--json")
    res = dict(recipe=a.recipe, batch=a.batch, steps=a.steps, conv_impl=resolve_impl(a.conv_impl),
               cpu=describe(), load_average=os.getloadavg(),
               XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))
    x, y = random_batch(a.batch)
    res["jax"] = jax_profile(r, x, y, a.steps, a.conv_impl)
    res["torch"] = torch_profile(r, x, y, a.steps)
    res["jax_by_part"] = by_part(res["jax"]["ops"])
    print(markdown(res, a.top))
    if a.json:
        from airbench_common.records import write_json_atomic
        write_json_atomic(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
