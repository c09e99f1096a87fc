"""The precision policy (airbench_common.precision): its names and parts, both CLIs' options, and
both frameworks under each policy over the first training steps from shared weights, on CPU
(parity.numerics.policies: the 16-bit activation paths, the native convolution and the bfloat16
Newton-Schulz that a GPU run takes, at small widths)."""
from __future__ import annotations

import pytest

from airbench_common import precision as P


# ---------------------------------------------------------------------- each side's refusals
# (the policy itself, without either framework: tests/test_common_precision.py)
def test_torch_refuses_params_other_than_compute():
    from airbench_torch.device import resolve_precision
    with pytest.raises(P.PrecisionError, match="PyTorch"):
        resolve_precision("float32", "cpu", dtype="bfloat16", param_dtype="float32")
    assert resolve_precision("upstream", "cpu").params == "float16"


@pytest.mark.parametrize("module", ["airbench_torch", "airbench_jax"])
def test_cli_bad_policy_is_one_line_exit_2(module, capsys, tmp_path):
    import importlib
    main = importlib.import_module(f"{module}.__main__").main
    argv, word = ["--precision", "float32", "--param-dtype", "float16", "--dtype", "bfloat16",
                  "--out", str(tmp_path / "r.jsonl"), "--device", "cpu"], "PyTorch side"
    if module == "airbench_jax":  # JAX runs mixed policies: give it a bad part instead
        argv, word = ["--precision", "nope", "--out", str(tmp_path / "r.jsonl")], "nope"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and word in err, err
    assert not (tmp_path / "r.jsonl").exists()


# ---------------------------------------------------------------------- both sides, each policy
# the GPU default (upstream: float16 activations, bfloat16 Newton-Schulz) runs by default (27-69 s
# at load 9 on 2 cores, compiles included); float32 (parity.numerics' setting, checked in full
# there) and bfloat16 are slow, to keep the default suite short
@pytest.mark.parametrize("policy", [pytest.param("float32", marks=pytest.mark.slow), "upstream",
                                    pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_frameworks_agree_under_each_policy(policy):
    """Two steps of airbench94_muon (widths 8/32/32, batch 32, JAX's native convolution) from
    the same weights: dtypes of weights, activations and Newton-Schulz are the policy's on both
    sides, and loss and per-group parameter changes agree within the format-derived bounds of
    parity.numerics.policies (16-bit: each side's own error is also of the format's size)."""
    from parity.numerics.policies import run_policy, table
    rep = run_policy(policy, steps=2)
    assert not rep.failures, table(rep)
    checks = {x.check for x in rep.rows}
    assert {"torch: activations are " + P.POLICIES[policy].compute,
            "jax: Newton-Schulz is " + P.POLICIES[policy].newton_schulz} <= checks
    assert sum(x.via != "info" and "change" in x.check for x in rep.rows) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("jax_policy, failing", [
    (dict(dtype="float32", param_dtype="float16"), "jax: activations are float16"),
    (dict(ns_dtype="float32"), "jax: Newton-Schulz is bfloat16"),
    (dict(dtype="bfloat16"), "step 1: change [norm_biases], jax vs torch (rel L2)"),
])
def test_a_side_in_another_dtype_fails(jax_policy, failing):
    """The comparison is not blind: JAX silently computing in float32, running Newton-Schulz in
    float32, or storing and computing in bfloat16 under the upstream (float16) policy fails."""
    from parity.numerics.policies import run_policy
    rep = run_policy("upstream", steps=1, jax_policy=P.resolve("upstream", **jax_policy))
    assert rep.failures
    assert any(x.check == failing for x in rep.failures), [x.check for x in rep.failures]


@pytest.mark.slow
def test_torch_in_another_dtype_fails():
    """The same from the PyTorch side: its net in bfloat16 under the upstream policy."""
    from parity.numerics.policies import run_policy
    rep = run_policy("upstream", steps=1, torch_policy="bfloat16")
    bad = {x.check for x in rep.failures}
    assert {"torch: activations are float16", "torch: stored dtypes are the policy's"} <= bad
