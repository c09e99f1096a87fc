"""parity.bench runs both frameworks' real train steps and reports a consistent ratio."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from parity import bench  # noqa: E402
from airbench_common import get_recipe  # noqa: E402


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
