"""Checkpoints of a CifarNet, in two formats:

* `.npz`: upstream-named arrays in PyTorch's layout (airbench_jax.convert), so a PyTorch state
  dict saved with `np.savez(path, **{k: v.numpy() for k, v in sd.items()})` loads here and ours
  loads there with `torch.from_numpy`;
* anything else: msgpack (flax.serialization) of the net's {"params", "rest"} state.

Loading is all or nothing: the file's format (read from its bytes, whatever its name), every key
and every shape are checked against the target net before anything is written into it, so a bad
file leaves the caller's net as it was. Every failure (missing, empty, truncated, another format,
a missing or extra key, another width) is a CheckpointError with a one-line message. No pickle:
np.load(allow_pickle=False), and flax's msgpack restore only knows msgpack's ndarray extension.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from flax import nnx, serialization, traverse_util

from airbench_common import validate as V
from airbench_common.errors import UsageError
from airbench_common.files import atomic_write_bytes
from airbench_common.recipes import Recipe, get_recipe

from .convert import from_torch_arrays, to_torch_arrays
from .model import CifarNet, make_net as _make_net, split_net

ZIP_MAGIC = b"PK\x03\x04"   # an .npz is a zip archive


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded into the given net."""


def save_checkpoint(net: CifarNet, path) -> None:
    """.npz: upstream-named arrays (PyTorch layout); otherwise msgpack of (params, rest).
    Written atomically (temporary file + rename), mode 0644: an interrupted save leaves the old
    file."""
    V.check_instance("net", net, CifarNet, "a CifarNet")
    path = V.check_out_file(V.check_path_like("path", path), "checkpoint path", "net.npz")
    if path.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **to_torch_arrays(net))
        blob = buf.getvalue()
    else:
        _, p, r = split_net(net)
        blob = serialization.msgpack_serialize({"params": p, "rest": r})
    atomic_write_bytes(path, lambda f: f.write(blob))


def load_checkpoint(path, net: CifarNet | str | Recipe = "airbench94") -> CifarNet:
    """Load `path` into `net` (a CifarNet, updated in place and returned; or a recipe / recipe
    name, whose fresh net is built first). All or nothing; CheckpointError on any mismatch."""
    path = V.check_path_like("path", path)
    V.check_instance("net", net, (CifarNet, Recipe, str), "a CifarNet, a Recipe or a recipe name")
    if not isinstance(net, CifarNet):
        net = _make_net(net if isinstance(net, Recipe) else get_recipe(net), None)
    try:
        blob = path.read_bytes()
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory; give a .npz or msgpack file") \
            from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not blob:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); an interrupted copy? "
                              "save it again")
    if blob.startswith(ZIP_MAGIC):
        arrays = _read_npz(blob, path)
        _check(path, "upstream-named arrays", _flat_shapes(to_torch_arrays(net)), arrays)
        for key, value in arrays.items():
            if ".norm" in key and key.endswith(".weight") and not np.all(value == 1):
                raise CheckpointError(f"checkpoint {path}: {key} is not all ones (airbench's "
                                      "BatchNorm scale is frozen at 1); not an airbench net")
        return from_torch_arrays(net, arrays)
    state = _read_msgpack(blob, path)
    g, p, r = split_net(net)
    want = {("params",) + k: v for k, v in traverse_util.flatten_dict(p).items()}
    want.update({("rest",) + k: v for k, v in traverse_util.flatten_dict(r).items()})
    _check(path, "msgpack state", _flat_shapes(want), state)
    # rebuild the pure dicts with the net's own keys (msgpack turns int keys into strings)
    fill = {k: np.asarray(state[_key(k)]).astype(np.asarray(v).dtype) for k, v in want.items()}
    params = traverse_util.unflatten_dict({k[1:]: v for k, v in fill.items() if k[0] == "params"})
    rest = traverse_util.unflatten_dict({k[1:]: v for k, v in fill.items() if k[0] == "rest"})
    nnx.update(net, nnx.state(nnx.merge(g, params, rest)))
    return net


def _key(k) -> str:
    return ".".join(str(part) for part in k) if isinstance(k, tuple) else str(k)


def _flat_shapes(arrays: dict) -> dict[str, tuple]:
    return {_key(k): tuple(np.shape(v)) for k, v in arrays.items()}


def _read_npz(blob: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is a truncated or corrupt .npz "
                              f"({type(exc).__name__}); save it again") from None


def _read_msgpack(blob: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        d = serialization.msgpack_restore(blob)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for bad bytes
        raise CheckpointError(f"checkpoint {path} is neither an .npz nor a msgpack checkpoint, or "
                              f"it is truncated ({type(exc).__name__}); save it again with "
                              "save_checkpoint") from None
    if not isinstance(d, dict) or set(d) != {"params", "rest"}:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"checkpoint {path} is msgpack but not a CifarNet checkpoint "
                              f"(top level {keys}, expected params and rest)")
    return {_key(k): v for k, v in traverse_util.flatten_dict(d).items()}


def _check(path: Path, what: str, want: dict[str, tuple], got: dict) -> None:
    """Every expected key present with its shape and a numeric dtype, and nothing else."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {len(missing)} of the net's {what} "
                              f"(first: {missing[0]}); it is not a checkpoint of this recipe")
    if extra:
        raise CheckpointError(f"checkpoint {path} has {len(extra)} {what} this net does not "
                              f"(first: {extra[0]}); it is a checkpoint of another recipe")
    for key, shape in want.items():
        value = np.asarray(got[key])
        if value.dtype.kind not in "biuf":
            raise CheckpointError(f"checkpoint {path}: {key} has dtype {value.dtype}, expected "
                                  "numbers")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"checkpoint {path}: {key} has shape {tuple(value.shape)}, the "
                                  f"net expects {shape}: a net of another width or depth")
