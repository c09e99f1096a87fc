"""benchmarks/trace_step.py: the compiled-HLO parsing that labels each traced op."""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp

_path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "trace_step.py"
_spec = importlib.util.spec_from_file_location("trace_step", _path)
trace_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_step)


def test_gemm_pass_labels_the_three_conv_passes_and_nothing_else():
    widths = (64, 256, 256)
    assert trace_step.gemm_pass("dot M112500 K576 N256", widths) == "conv fwd"
    assert trace_step.gemm_pass("dot M112500 K256 N576", widths) == "conv dx"
    assert trace_step.gemm_pass("dot M576 K112500 N256", widths) == "conv dw"
    assert trace_step.gemm_pass("dot M256 K112500 N576", widths) == "conv dw"
    assert trace_step.gemm_pass("dot M500 K256 N10", widths) == "matmul"     # the head
    assert trace_step.gemm_pass("reduce", widths) == ""


def test_parse_hlo_finds_a_compiled_matmul_with_its_dims():
    a, b = jnp.ones((48, 216)), jnp.ones((216, 64))
    text = jax.jit(lambda x, y: jnp.tanh(x @ y)).lower(a, b).compile().as_text()
    instrs, roots = trace_step.parse_hlo(text)
    described = [trace_step.describe_op(n, instrs, roots) for n in instrs]
    assert ("dot M48 K216 N64", "48x64") in described, described
