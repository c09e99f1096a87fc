"""The precision policy: the one place that says which dtype each part of a run uses, on both sides.

A policy has five parts:

| part | what it governs |
|---|---|
| `params` | the stored conv/linear weights (and whitening bias) and their optimizer state |
| `compute` | activations and the convolutions/matmuls of the forward and backward passes |
| `batchnorm` | BatchNorm statistics (batch and running) and the BatchNorm bias |
| `newton_schulz` | Muon's Newton-Schulz iteration |
| `tf32` | TensorFloat-32 on NVIDIA GPUs for float32 convolutions and matmuls: `off`, `conv` (convolutions may use TF32, matmuls not: PyTorch's defaults, which upstream leaves as they are) or `on` |

Named policies:

- `float32`: float32 everywhere, TF32 off. The CPU default, and the setting of parity's
  shared-weight checks (`parity.numerics`, `parity.lockstep`) on every device: `NUMERICS`, which
  `parity.numerics.setting.setup_precision` applies to both frameworks.
- `upstream`: upstream airbench's CUDA policy: float16 weights and activations, float32
  BatchNorm, bfloat16 Newton-Schulz, TF32 as PyTorch leaves it (`conv`). The GPU default.
- `bfloat16`: as `upstream` with bfloat16 weights and activations, to compare the two 16-bit
  formats (the JAX side's GPU default before this policy existed was bfloat16 activations with
  float32 weights: `bfloat16` with `--param-dtype float32`, JAX only).

Each part can be overridden (`--dtype` sets `params` and `compute` together, `--param-dtype`,
`--bn-dtype`, `--ns-dtype`, `--tf32`); an overridden policy is named `<base>+<part>=<value>,...`
so a record always says exactly what ran. The PyTorch side stores weights in the compute dtype
(it has no per-op cast), so it refuses `params != compute`; BatchNorm is float32 only on both
sides (16-bit batch statistics are not implemented, and upstream never uses them).
This module imports neither framework: each side maps the names to its own dtypes.
"""
from __future__ import annotations

import dataclasses

from .errors import UsageError

DTYPES = ("float32", "bfloat16", "float16", "float64")  # float64: parity's references only;
                                                         # the CLIs offer validate.DTYPES
BN_DTYPES = ("float32",)
TF32_MODES = ("off", "conv", "on")
# unit roundoff-style machine epsilon (spacing of numbers at 1.0) of each format
EPS = {"float32": 2.0 ** -23, "bfloat16": 2.0 ** -7, "float16": 2.0 ** -10, "float64": 2.0 ** -52}


class PrecisionError(UsageError):
    """An unknown policy name or part value, or a policy a side cannot run."""


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str
    params: str
    compute: str
    batchnorm: str
    newton_schulz: str
    tf32: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


POLICIES = {
    "float32": Precision("float32", "float32", "float32", "float32", "float32", "off"),
    "upstream": Precision("upstream", "float16", "float16", "float32", "bfloat16", "conv"),
    "bfloat16": Precision("bfloat16", "bfloat16", "bfloat16", "float32", "bfloat16", "conv"),
}
NUMERICS = POLICIES["float32"]   # the shared-weight checks' setting (applied to both frameworks
#                                  by parity.numerics.setting.setup_precision)


def default_policy_name(accelerator: bool) -> str:
    """`upstream` on a GPU (or other accelerator), `float32` on CPU."""
    return "upstream" if accelerator else "float32"


def _check(name: str, value: str, accepted) -> str:
    if value not in accepted:
        raise PrecisionError(f"{name} {value!r} is not one of {', '.join(accepted)}")
    return value


def resolve(policy: str | Precision | None = None, *, accelerator: bool = False,
            dtype: str | None = None, param_dtype: str | None = None,
            bn_dtype: str | None = None, ns_dtype: str | None = None,
            tf32: str | None = None) -> Precision:
    """The policy to run: `policy` (a name, a Precision, or None for the device's default) with
    the given parts overridden (`dtype` sets params and compute; `param_dtype` then params)."""
    if isinstance(policy, Precision):
        base = policy
    else:
        name = default_policy_name(accelerator) if policy is None else policy
        base = POLICIES.get(_check("precision policy", name, tuple(POLICIES)))
    over = {}
    if dtype is not None:
        over["params"] = over["compute"] = _check("--dtype", dtype, DTYPES)
    if param_dtype is not None:
        over["params"] = _check("--param-dtype", param_dtype, DTYPES)
    if bn_dtype is not None:
        over["batchnorm"] = _check("--bn-dtype", bn_dtype, BN_DTYPES)
    if ns_dtype is not None:
        over["newton_schulz"] = _check("--ns-dtype", ns_dtype, DTYPES)
    if tf32 is not None:
        over["tf32"] = _check("--tf32", tf32, TF32_MODES)
    changed = {k: v for k, v in over.items() if getattr(base, k) != v}
    if not changed:
        return base
    label = base.name + "+" + ",".join(f"{k}={v}" for k, v in changed.items())
    return dataclasses.replace(base, name=label, **changed)


def require_same_params_and_compute(p: Precision, side: str) -> Precision:
    """For a side that computes in its weights' dtype (PyTorch): refuse a mixed policy."""
    if p.params != p.compute:
        raise PrecisionError(
            f"precision {p.name!r}: params {p.params} with compute {p.compute} is not supported "
            f"by the {side} side (it computes in the dtype it stores); give one --dtype")
    return p

