"""parity.bench runs both frameworks' real train steps and reports a consistent ratio."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from parity import bench  # noqa: E402
from airbench_common import get_recipe  # noqa: E402
from airbench_common.env import code_version  # noqa: E402


def test_forward_flops_of_airbench94():
    # hand count: whitening + 6 convs + head, 2 FLOPs per multiply-add
    macs = (31 * 31 * 12 * 24 + 31 * 31 * 216 * 64 + 15 * 15 * 576 * 64 + 15 * 15 * 576 * 256
            + 7 * 7 * 2304 * 256 + 7 * 7 * 2304 * 256 + 3 * 3 * 2304 * 256 + 256 * 10)
    assert bench.forward_flops(get_recipe("airbench94")) == 2 * macs
    assert bench.forward_flops(get_recipe("airbench96")) > bench.forward_flops(
        get_recipe("airbench96", depth=2))


def test_bench_tiny_net_runs_both_frameworks():
    res = bench.bench("airbench94_muon", batch=32, steps=1, reps=1,
                      overrides={"widths": (8, 16, 16)}, log=lambda *_: None)
    ips = res["images_per_second"]
    assert ips["jax"] > 0 and ips["torch"] > 0
    assert res["ratio_jax_over_torch"] == pytest.approx(ips["jax"] / ips["torch"])
    assert 0 < res["fraction_of_peak"]["jax"] < 1.5


def test_bench_times_both_torch_memory_formats_side_by_side():
    res = bench.bench("airbench94_muon", batch=32, steps=1, reps=1,
                      overrides={"widths": (8, 16, 16)}, log=lambda *_: None,
                      torch_channels_last="both")
    ips = res["images_per_second"]
    assert set(ips) == {"jax", "torch", "torch_contiguous"}   # CPU policy: channels_last
    assert res["torch_channels_last"] == {"torch": True, "torch_contiguous": False}
    assert res["ratio_torch_channels_last_over_contiguous"] == pytest.approx(
        ips["torch"] / ips["torch_contiguous"])
    with pytest.raises(ValueError, match="not one of"):
        bench.bench("airbench94_muon", batch=32, torch_channels_last="sideways")


def test_bench_times_the_scan_program_and_reports_cpu_and_load():
    res = bench.bench("airbench94_muon", batch=32, steps=2, reps=1,
                      overrides={"widths": (8, 16, 16)}, log=lambda *_: None, scan=True)
    ips = res["images_per_second"]
    assert set(ips) == {"jax", "jax_scan", "torch"}
    assert res["ratio_jax_scan_over_step"] == pytest.approx(ips["jax_scan"] / ips["jax"])
    assert res["ratios_jax_over"] == {"torch": pytest.approx(ips["jax"] / ips["torch"])}
    assert set(res["compile_seconds"]) == {"jax", "jax_scan"}
    assert res["cpu"]["logical_cpus"] >= 1 and isinstance(res["cpu"]["features"], list)
    assert res["code"] == code_version()              # which code measured it
    assert len(res["load_average"]["before"]) == 3
    assert set(res["page_faults_per_step"]) == set(ips)
    assert all(v >= 0 for v in res["page_faults_per_step"].values())
    dnnl = res["onednn"]
    if res["conv_impl"] == "onednn":
        assert dnnl["available"] and dnnl["version"]
        assert len(dnnl["kernels_first_conv"].split(" | ")) == 3
    else:
        assert dnnl["available"] or dnnl["reason"]


# slow suite: train_steps (one lax.scan program of k steps) serves only the benchmark's --scan
# timing (the workloads' stepper, for the benchmark), not training, which runs train_epoch
@pytest.mark.slow
def test_scan_program_takes_the_same_steps_as_train_step():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import airbench_jax as aj
    from airbench_jax.loop import train_steps
    r = get_recipe("airbench94_muon", widths=(8, 16, 16), batch_size=16, epochs=100)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 32, 32, 3), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, 16).astype(np.int32))
    s0 = aj.init_train_state(r, 160, jax.random.PRNGKey(0), whiten_images=x, conv_impl="native")
    s1, l1 = aj.train_step(s0, x, y)
    s1, l2 = aj.train_step(s1, x, y)
    s2, losses = train_steps(s0, x, y, 2)
    np.testing.assert_allclose(losses, [l1, l2], rtol=1e-5)
    assert int(s2.step) == 2
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
