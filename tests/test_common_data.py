"""Dataset access: formats, the download path (MD5 verified, served from 127.0.0.1), bad input."""
import functools
import hashlib
import http.server
import io
import pickle
import re
import tarfile
import threading

import numpy as np
import pytest

from airbench_common import data as D
from airbench_common.data import DatasetError, load_cifar10


def _official_archive(train, test, per_batch=800) -> bytes:
    """Build a cifar-10-python.tar.gz in the official layout from (images, labels) arrays:
    5 train batches + test_batch, rows CHW-planar uint8, labels as lists."""
    def batch(images, labels):
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        return pickle.dumps({b"data": rows, b"labels": [int(x) for x in labels],
                             b"batch_label": b"test"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = {f"data_batch_{i + 1}": batch(train[0][i * per_batch:(i + 1) * per_batch],
                                                train[1][i * per_batch:(i + 1) * per_batch])
                   for i in range(5)}
        members["test_batch"] = batch(*test)
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{D.BATCHES_DIR}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive_bytes(lossless_subset):
    return _official_archive(*lossless_subset)


@pytest.fixture()
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (loopback only) for the download path."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_md5_and_reproduces_exact_pixels(tmp_path, http_server, archive_bytes,
                                                          lossless_subset, monkeypatch):
    www, base = http_server
    (www / D.ARCHIVE_NAME).write_bytes(archive_bytes)
    md5 = hashlib.md5(archive_bytes).hexdigest()
    monkeypatch.setenv("AIRBENCH_CIFAR10_URL", f"{base}/{D.ARCHIVE_NAME}")
    data_dir = tmp_path / "cache"
    images, labels = load_cifar10("train", data_dir, md5=md5)
    (train_images, train_labels), _ = lossless_subset
    assert images.shape == (4000, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, train_images)  # official pixel layout decoded exactly
    np.testing.assert_array_equal(labels, train_labels)
    assert (data_dir / "train.npz").exists()  # cached as arrays
    # the cache is used next time: removing the archive changes nothing
    (data_dir / D.ARCHIVE_NAME).unlink()
    np.testing.assert_array_equal(load_cifar10("train", data_dir)[0], train_images)
    test_images, test_labels = load_cifar10("test", tmp_path / "cache2", md5=md5)
    assert test_images.shape == (1000, 32, 32, 3) and test_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_download_with_wrong_md5_is_rejected_and_removed(tmp_path, http_server, archive_bytes, monkeypatch):
    www, base = http_server
    (www / D.ARCHIVE_NAME).write_bytes(archive_bytes)
    monkeypatch.setenv("AIRBENCH_CIFAR10_URL", f"{base}/{D.ARCHIVE_NAME}")
    with pytest.raises(DatasetError, match="MD5"):
        load_cifar10("train", tmp_path / "d")  # the official MD5 cannot match our test archive
    assert not (tmp_path / "d" / D.ARCHIVE_NAME).exists()
    assert not list((tmp_path / "d").glob("*.tmp"))  # nothing half-written left behind


def test_bad_download_never_takes_the_archive_name(tmp_path, http_server, archive_bytes,
                                                  monkeypatch):
    """The MD5 is checked on the temporary file, before the rename: a reader (or a crash right
    after the rename) never sees a bad archive under the official name."""
    import os
    www, base = http_server
    (www / D.ARCHIVE_NAME).write_bytes(archive_bytes)
    renamed, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(str(b)), real(a, b)))
    with pytest.raises(DatasetError, match="MD5"):
        D.download_archive(tmp_path / "d", url=f"{base}/{D.ARCHIVE_NAME}", md5="0" * 32)
    assert renamed == [] and list((tmp_path / "d").iterdir()) == []
    D.download_archive(tmp_path / "d", url=f"{base}/{D.ARCHIVE_NAME}",
                       md5=hashlib.md5(archive_bytes).hexdigest())
    assert renamed == [str(tmp_path / "d" / D.ARCHIVE_NAME)]
    assert (tmp_path / "d" / D.ARCHIVE_NAME).stat().st_mode & 0o777 == 0o644


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_cifar10("train", f)


def test_unreachable_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRBENCH_CIFAR10_URL", "http://127.0.0.1:9/cifar.tar.gz")
    with pytest.raises(DatasetError, match="could not download") as e:
        load_cifar10("train", tmp_path)
    assert "\n" not in str(e.value)


def test_truncated_archive(tmp_path, archive_bytes):
    (tmp_path / D.ARCHIVE_NAME).write_bytes(archive_bytes[: len(archive_bytes) // 2])
    with pytest.raises(DatasetError, match="MD5"):
        load_cifar10("train", tmp_path)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_cifar10("train", tmp_path, md5=hashlib.md5(archive_bytes[: len(archive_bytes) // 2]).hexdigest())


def test_extracted_batches_folder(tmp_path, archive_bytes, lossless_subset):
    with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as tar:
        tar.extractall(tmp_path, filter="data")
    images, labels = load_cifar10("test", tmp_path)
    np.testing.assert_array_equal(images, lossless_subset[1][0])
    (tmp_path / D.BATCHES_DIR / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_cifar10("train", tmp_path)


@pytest.mark.parametrize("images,labels,match", [
    (np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.uint8), "dtype float32"),
    (np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, np.uint8), "shape"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3, np.uint8), "3 labels"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 10], np.uint8), "expected 0-9"),
])
def test_bad_arrays_give_one_line_errors(tmp_path, images, labels, match):
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    with pytest.raises(DatasetError, match=match) as e:
        load_cifar10("train", tmp_path)
    assert "\n" not in str(e.value)


def test_corrupt_npz_and_missing_keys(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_cifar10("train", tmp_path)
    np.savez(tmp_path / "test.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="missing key"):
        load_cifar10("test", tmp_path)


def test_npz_that_is_not_a_zip_never_mentions_pickles(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value) == (f"{tmp_path / 'train.npz'} is not an .npz archive (truncated, "
                            "corrupt or another format); delete it and run again to rebuild it")


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DatasetError, match="AIRBENCH_DATA"):
        load_cifar10("train", tmp_path / "empty", download=False)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRBENCH_DATA", str(tmp_path / "env"))
    assert D.resolve_data_dir() == tmp_path / "env"
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("AIRBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.resolve_data_dir() == tmp_path / "xdg" / "airbench" / "cifar10"


def test_real_data_is_labelled(real_data_dir):
    images, labels = load_cifar10("test", real_data_dir)
    assert images.shape == (10000, 32, 32, 3) and np.bincount(labels).tolist() == [1000] * 10
    label = D.dataset_label(real_data_dir)
    assert label in ("JPEG CIFAR-10", "CIFAR-10")


def test_dataset_label_reads_source_md(tmp_path):
    assert D.dataset_label(tmp_path) == "CIFAR-10"                     # no SOURCE.md
    (tmp_path / "SOURCE.md").write_text("# CIFAR-10 decoded from JPEG (quality 95)\n")
    assert D.dataset_label(tmp_path) == "JPEG CIFAR-10"
    (tmp_path / "SOURCE.md").write_text("Exact pixels: a Subset of the official files\n")
    assert D.dataset_label(tmp_path) == "CIFAR-10 lossless subset"
    (tmp_path / "SOURCE.md").write_text("x" * 2000 + " jpeg")           # only the head is read
    assert D.dataset_label(tmp_path) == "CIFAR-10"
    (tmp_path / "SOURCE.md").write_text("x" * 1996 + "jpeg")            # the head: 2000 characters
    assert D.dataset_label(tmp_path) == "JPEG CIFAR-10"
    (tmp_path / "SOURCE.md").write_text("x" * 1997 + "jpeg")
    assert D.dataset_label(tmp_path) == "CIFAR-10"
    (tmp_path / "SOURCE.md").write_bytes(b"\xff\xfe JPEG")              # bytes that are not UTF-8
    assert D.dataset_label(tmp_path) == "JPEG CIFAR-10"


def test_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert D.default_data_dir() == tmp_path / "airbench" / "cifar10"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.default_data_dir() == tmp_path / "home" / ".cache" / "airbench" / "cifar10"


# --- every dataset error message in full (mutation testing: the tests above match fragments,
# so a changed word, a lost path or a dropped hint in these messages went unnoticed).

def test_download_messages_in_full(tmp_path, http_server, archive_bytes, monkeypatch):
    url = "http://127.0.0.1:9/cifar.tar.gz"
    with pytest.raises(DatasetError) as e:
        D.download_archive(tmp_path / "d", url=url, md5="0" * 32)
    msg = str(e.value)
    assert msg.startswith(f"could not download CIFAR-10 from {url} (") and "\n" not in msg
    assert msg.endswith(f"); download {D.ARCHIVE_NAME} by hand into {tmp_path / 'd'}, or set "
                        "AIRBENCH_DATA / --data-dir to a folder holding train.npz and test.npz")
    www, base = http_server
    (www / D.ARCHIVE_NAME).write_bytes(archive_bytes)
    monkeypatch.setenv("AIRBENCH_CIFAR10_URL", f"{base}/{D.ARCHIVE_NAME}")
    monkeypatch.setenv("AIRBENCH_CIFAR10_MD5", "1" * 32)          # the defaults come from env
    with pytest.raises(DatasetError) as e:
        D.download_archive(tmp_path / "d")
    assert str(e.value) == (f"downloaded {base}/{D.ARCHIVE_NAME} has MD5 "
                            f"{hashlib.md5(archive_bytes).hexdigest()}, expected {'1' * 32}; the "
                            "download was corrupt or is not the official archive: try again")


def test_archive_messages_in_full(tmp_path, archive_bytes):
    archive = tmp_path / D.ARCHIVE_NAME
    half = archive_bytes[: len(archive_bytes) // 2]
    archive.write_bytes(half)
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path, md5="2" * 32)
    assert str(e.value) == (f"{archive} has MD5 {hashlib.md5(half).hexdigest()}, expected "
                            f"{'2' * 32} (truncated or corrupt download): delete it and run "
                            "again to re-download")
    with pytest.raises(DatasetError) as e:
        D._read_archive(archive, "train", None)                     # md5 None: no check
    assert re.fullmatch(rf"{re.escape(str(archive))} is truncated or corrupt \(\w+\); delete it "
                        "and run again to re-download", str(e.value))
    buf = io.BytesIO()                                              # a tar without test_batch
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{D.BATCHES_DIR}/data_batch_1")
        tar.addfile(info, io.BytesIO(b""))
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError) as e:
        D._read_archive(archive, "test", None)
    assert str(e.value) == (f"{archive} has no {D.BATCHES_DIR}/test_batch; it is not the "
                            "CIFAR-10 python archive: delete it and re-download")


def test_batch_messages_in_full(tmp_path):
    with pytest.raises(DatasetError) as e:
        D._unpickle_batch(b"not a pickle", "where/x")
    assert str(e.value) == ("where/x is corrupt (UnpicklingError); delete it and download the "
                            "official archive again")
    for data in (np.zeros((2, 100), np.uint8), np.zeros(3072, np.uint8)):
        raw = pickle.dumps({b"data": data, b"labels": [0, 1]})
        with pytest.raises(DatasetError) as e:
            D._unpickle_batch(raw, "where/x")
        assert str(e.value) == f"where/x: data has shape {data.shape}, expected (N, 3072)"
    images, labels = D._unpickle_batch(
        pickle.dumps({b"data": np.arange(3072).reshape(1, 3072) % 256, b"labels": [7]}), "w")
    assert images.dtype == np.uint8 and labels.dtype == np.int64 and labels.tolist() == [7]
    (tmp_path / D.BATCHES_DIR).mkdir()
    with pytest.raises(DatasetError) as e:
        load_cifar10("test", tmp_path)
    assert str(e.value) == (f"{tmp_path / D.BATCHES_DIR / 'test_batch'} is missing; extract the "
                            "full official archive there or remove the folder so the archive "
                            "is downloaded again")


def test_load_messages_in_full(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_cifar10("val", tmp_path)
    assert str(e.value) == "unknown split 'val'; use 'train' or 'test'"
    with pytest.raises(DatasetError) as e:
        load_cifar10("test", tmp_path / "empty", download=False)
    assert str(e.value) == (f"no CIFAR-10 in {tmp_path / 'empty'} (expected test.npz, "
                            f"{D.BATCHES_DIR}/ or {D.ARCHIVE_NAME}); set AIRBENCH_DATA or "
                            "--data-dir, or allow the download")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path / "f")
    assert str(e.value) == (f"data folder {tmp_path / 'f'} is a file, not a folder; give the "
                            f"folder that holds train.npz/test.npz, {D.BATCHES_DIR}/ or "
                            f"{D.ARCHIVE_NAME}")


def _batches_folder(tmp_path, labels_of_train=None):
    """An extracted official layout of 10 train and 2 test images (2 per train batch)."""
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
             np.arange(10) if labels_of_train is None else labels_of_train)
    test = (rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), np.array([3, 4]))
    with tarfile.open(fileobj=io.BytesIO(_official_archive(train, test, per_batch=2))) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / D.BATCHES_DIR, train


def test_batches_folder_errors_name_the_batch_file(tmp_path):
    folder, train = _batches_folder(tmp_path)
    images, labels = load_cifar10("train", tmp_path, download=False)
    np.testing.assert_array_equal(images, train[0])
    assert labels.tolist() == list(range(10))
    (tmp_path / "train.npz").unlink()
    (folder / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path, download=False)
    assert str(e.value) == (f"{folder}/data_batch_2 is corrupt (UnpicklingError); delete it and "
                            "download the official archive again")


def test_batches_folder_with_bad_labels_names_the_folder(tmp_path):
    folder, _ = _batches_folder(tmp_path, labels_of_train=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12]))
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path, download=False)
    assert str(e.value) == (f"{folder}: labels range 0..12, expected 0-9; re-create it (delete "
                            "the file to re-download) or point --data-dir/AIRBENCH_DATA at a good "
                            "copy")


# ------------------------------------------------------------------- .npz files: exact messages
def test_an_unreadable_npz_is_one_dataset_error(tmp_path):
    (tmp_path / "train.npz").mkdir()                 # exists, cannot be read as a file
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value) == f"cannot read {tmp_path / 'train.npz'}: Is a directory"


def test_npz_messages(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value) == (f"{path}: missing key(s) ['labels'] (has ['images']); expected keys "
                            "images (uint8 NHWC) and labels")
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([1, 10]))
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value).startswith(f"{path}: labels range 1..10, expected 0-9; ")
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)     # a zip's magic, then nothing valid
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value) == (f"{path} is truncated or corrupt (BadZipFile: File is not a zip "
                            "file); delete it and run again to rebuild it")


def test_npz_holding_pickled_objects_is_never_unpickled(tmp_path):
    """An .npz can hold pickles (code that runs on load); a dataset file must not run code."""
    path = tmp_path / "train.npz"
    images = np.empty(2, dtype=object)
    np.savez(path, images=images, labels=np.array([1, 2]))
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value).startswith(f"{path} is truncated or corrupt (ValueError: Object arrays "
                                   "cannot be loaded when allow_pickle=False")


def _py2_pickle(rows, labels) -> bytes:
    """A batch as the official archive's Python 2 pickles are: dict keys are py2 `str`
    (SHORT_BINSTRING), which Python 3 reads as bytes only with encoding='bytes'."""
    body = pickle.dumps(rows, protocol=2)[2:-1], pickle.dumps(labels, protocol=2)[2:-1]
    return (b"\x80\x02}(U\x04data" + body[0] + b"U\x06labels" + body[1] + b"u.")


def test_python2_batches_are_read():
    rows = [[i % 256 for i in range(3072)], [(7 * i) % 256 for i in range(3072)]]
    images, labels = D._unpickle_batch(_py2_pickle(rows, [3, 9]), "where/data_batch_1")
    assert labels.tolist() == [3, 9] and labels.dtype == np.int64
    np.testing.assert_array_equal(images[1, :, :, 2].ravel(),
                                  np.array(rows[1][2048:], np.uint8))   # B plane, row-major


# ------------------------------------------------------------------- the archive: exact messages
def _tiny_archive(tmp_path, corrupt_batch=None) -> bytes:
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10) % 10)
    test = (rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), np.array([3, 4]))
    raw = _official_archive(train, test, per_batch=2)
    if corrupt_batch:
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(raw)) as src, \
                tarfile.open(fileobj=buf, mode="w:gz") as dst:
            for m in src.getmembers():
                payload = src.extractfile(m).read()
                if m.name.endswith("/" + corrupt_batch):
                    payload = b"garbage"
                    m.size = len(payload)
                dst.addfile(m, io.BytesIO(payload))
        raw = buf.getvalue()
    return raw


def test_archive_errors_name_the_member_and_the_failure(tmp_path):
    archive = tmp_path / D.ARCHIVE_NAME
    raw = _tiny_archive(tmp_path, corrupt_batch="data_batch_2")
    archive.write_bytes(raw)
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path, md5=hashlib.md5(raw).hexdigest())
    assert str(e.value) == (f"{archive}/data_batch_2 is corrupt (UnpicklingError); delete it and "
                            "download the official archive again")
    raw = _tiny_archive(tmp_path)
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as e:
        D._read_archive(archive, "train", None)
    assert str(e.value) == (f"{archive} is truncated or corrupt (EOFError); delete it and run "
                            "again to re-download")
    archive.write_bytes(raw)
    images, labels = load_cifar10("test", tmp_path, md5=hashlib.md5(raw).hexdigest())
    assert labels.tolist() == [3, 4] and labels.dtype == np.int64 and images.dtype == np.uint8


def test_download_defaults_to_the_official_url(tmp_path, monkeypatch):
    import urllib.request
    asked = []

    def offline(url, timeout):
        asked.append((url, timeout))
        raise OSError("offline")
    monkeypatch.delenv("AIRBENCH_CIFAR10_URL", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError) as e:
        D.download_archive(tmp_path)
    assert asked == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 60)]
    assert str(e.value) == ("could not download CIFAR-10 from https://www.cs.toronto.edu/~kriz/"
                            f"cifar-10-python.tar.gz (offline); download cifar-10-python.tar.gz "
                            f"by hand into {tmp_path}, or set AIRBENCH_DATA / --data-dir to a "
                            "folder holding train.npz and test.npz")


def test_labels_that_are_not_integers(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 32, 32, 3), np.uint8),
             labels=np.array([1.0, 2.0]))
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", tmp_path)
    assert str(e.value) == (f"{tmp_path / 'train.npz'}: labels have dtype float64, expected "
                            "integers; re-create it (delete the file to re-download) or point "
                            "--data-dir/AIRBENCH_DATA at a good copy")


def test_download_checks_the_official_md5_by_default(tmp_path, http_server, monkeypatch):
    www, base = http_server
    (www / D.ARCHIVE_NAME).write_bytes(b"not the archive")
    monkeypatch.delenv("AIRBENCH_CIFAR10_MD5", raising=False)
    url = f"{base}/{D.ARCHIVE_NAME}"
    with pytest.raises(DatasetError) as e:
        D.download_archive(tmp_path / "d", url=url)
    assert str(e.value) == (f"downloaded {url} has MD5 {hashlib.md5(b'not the archive').hexdigest()}"
                            ", expected c58f30108f718f92721af3b95e74349a; the download was corrupt "
                            "or is not the official archive: try again")
    assert not (tmp_path / "d" / D.ARCHIVE_NAME).exists()


def test_archive_md5_from_the_environment(tmp_path, monkeypatch):
    raw = _tiny_archive(tmp_path)
    (tmp_path / D.ARCHIVE_NAME).write_bytes(raw)
    monkeypatch.setenv("AIRBENCH_CIFAR10_MD5", hashlib.md5(raw).hexdigest())
    images, labels = load_cifar10(data_dir=tmp_path, download=False)    # the train split
    assert images.shape == (10, 32, 32, 3) and labels.tolist() == list(range(10))
