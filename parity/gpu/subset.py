"""The data a GPU check carries: at most 64 MiB travels with the code, so `make_subset` writes the
first N training and M test images of a CIFAR-10 folder into one compressed npz, and
`load_subset` reads it back with its identity (sha256, size, source); `synthetic_data` stands in
for it in a dry run."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

SUBSET_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
MAX_SUBSET_MIB = 55.0   # the 64 MiB a GPU command may carry, less room for the code


def sha256(path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_subset(path, n_train: int, n_test: int, data_dir=None) -> dict:
    """The first n_train training and n_test test images of the dataset, in one compressed npz;
    refused (UsageError) above MAX_SUBSET_MIB."""
    from airbench_common.data import dataset_label, load_cifar10
    from airbench_common.errors import UsageError
    tr, te = load_cifar10("train", data_dir), load_cifar10("test", data_dir)
    if not (1 <= n_train <= len(tr[0]) and 1 <= n_test <= len(te[0])):
        raise UsageError(f"--train {n_train} / --test {n_test}: give 1..{len(tr[0])} training and "
                         f"1..{len(te[0])} test images")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    source = f"{dataset_label(data_dir)}: first {n_train} train, first {n_test} test images"
    np.savez_compressed(tmp, train_images=tr[0][:n_train], train_labels=tr[1][:n_train],
                        test_images=te[0][:n_test], test_labels=te[1][:n_test],
                        source=np.asarray(source))
    mib = tmp.stat().st_size / 2 ** 20
    if mib > MAX_SUBSET_MIB:
        tmp.unlink()
        raise UsageError(f"the subset would be {mib:.1f} MiB, over the {MAX_SUBSET_MIB:g} MiB that "
                         f"fit beside the code on a GPU machine; give fewer --train/--test images")
    os.replace(tmp, path)
    return dict(path=str(path), sha256=sha256(path), mib=round(mib, 2), source=source,
                n_train=n_train, n_test=n_test)


def load_subset(path) -> tuple[dict, tuple, tuple]:
    """(identity, (train images, labels), (test images, labels)) of a --make-subset file."""
    from airbench_common.data import DatasetError, check_arrays
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in SUBSET_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{path} lacks {missing}; make it with python -m "
                                   "parity.gpu_check --make-subset")
            arrs = {k: z[k] for k in SUBSET_KEYS}
            source = str(z["source"]) if "source" in z.files else "unknown"
    except (OSError, ValueError) as exc:
        # np.load's own text for a non-array file suggests allow_pickle=True: never say that
        why = "not an .npz of arrays" if "pickle" in str(exc) else exc
        raise DatasetError(f"cannot read the subset {path}: {why}; make it with python -m "
                           "parity.gpu_check --make-subset") from None
    train = check_arrays(arrs["train_images"], arrs["train_labels"], str(path))
    test = check_arrays(arrs["test_images"], arrs["test_labels"], str(path))
    ident = dict(path=str(path), sha256=sha256(path), mib=round(path.stat().st_size / 2 ** 20, 2),
                 source=source, n_train=len(train[0]), n_test=len(test[0]),
                 format="npz (savez_compressed): uint8 NHWC images, int64 labels")
    return ident, train, test


def synthetic_data(n_train: int, n_test: int):
    from ..numerics.batches import synthetic_images
    x, y = synthetic_images(n_train + n_test, seed=0)
    ident = dict(source="synthetic (parity.numerics.batches.synthetic_images, seed 0)",
                 n_train=n_train, n_test=n_test, sha256=None)
    return ident, (x[:n_train], y[:n_train].astype(np.int64)), (x[n_train:],
                                                                y[n_train:].astype(np.int64))
