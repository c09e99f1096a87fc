"""CIFAR-10 on disk: find it, download it (MD5 verified), check it, cache it as arrays.

Both frameworks get plain numpy arrays from here: images uint8 (N, 32, 32, 3) NHWC RGB and labels
int64 (N,). Accepted layouts in the data directory, first match wins:
  1. train.npz / test.npz with keys `images`, `labels` (our cache format; also ../shared's copies)
  2. jpeg/train.npz / jpeg/test.npz: the images as JPEG files (the 18 MB form of ../shared's JPEG
     copy), read, decoded with Pillow and cached in the user's cache folder by
     airbench_common.jpeg (its docstring has the format and the cache)
  3. cifar-10-batches-py/ (the official python-version folder, extracted)
  4. cifar-10-python.tar.gz (the official archive; MD5 checked)
  5. nothing: the official archive is downloaded (MD5 checked), then converted to 1.

Labels (`dataset_label`) go by content where the content is known: the sha256 of the decoded
images of the known JPEG copy (KNOWN_JPEG_CIFAR10) make "JPEG CIFAR-10", whether they came from
layout 1 or 2; the known JPEG files decoded to other pixels (another libjpeg) are other data,
labelled OTHER_DECODER_LABEL with a warning; other JPEG files get UNKNOWN_JPEG_LABEL; anything else
falls back to the folder's SOURCE.md ("jpeg" in its head: "JPEG CIFAR-10") or "CIFAR-10".
"""
from __future__ import annotations

from .errors import DatasetError  # defined there; `from airbench_common.data import` it too
from .files import FileWriteError, atomic_write_bytes, user_cache_dir  # noqa: F401  (the one atomic writer)
from .jpeg import JPEG_FIX, load_jpeg_npz

import hashlib
import io
import os
import pickle
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

JPEG_DIR = "jpeg"
# The known JPEG copy of CIFAR-10 (../shared/data/cifar10-jpeg/SOURCE.md), per split: the sha256 of
# the file jpeg/<split>.npz, and of its images as Pillow 13.0.0 decodes them (images.tobytes(),
# uint8 NHWC, C order), which are exactly the pixels of that folder's <split>.npz.
KNOWN_JPEG_CIFAR10 = {
    "train": ("d6c939fb2ffa123a986b05777750c06939b837c3d93ba0cbe8ac68424920fb3d",
              "5aaf8a2cf2e577ff4dbb15e4f368840fab5aca1812bcc69682005f8dc661d466"),
    "test": ("c10281898a646c1f665f43a541bede6fe8b3a7f251c8ae599c4dae2826df5c43",
             "b7018a062865e9348a704e72416eb53c816b43cc8ac42ab43276a2b967508ab6"),
}
JPEG_LABEL = "JPEG CIFAR-10"
OTHER_DECODER_LABEL = "JPEG CIFAR-10 (decoded by another libjpeg: pixels differ)"
UNKNOWN_JPEG_LABEL = "JPEG images (not the known JPEG CIFAR-10 files)"


def default_data_dir() -> Path:
    return user_cache_dir() / "airbench" / "cifar10"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """An explicit argument, else $AIRBENCH_DATA, else ~/.cache/airbench/cifar10."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("AIRBENCH_DATA")
    return Path(env).expanduser() if env else default_data_dir()


def dataset_label(data_dir: str | os.PathLike | None = None) -> str:
    """How results on this data must be labelled: by content where it is known (see the module
    docstring; reads, and for jpeg/ decodes or takes from the cache, the data once per process),
    else by the folder's SOURCE.md (../shared's JPEG copy says so there), else "CIFAR-10"."""
    d = resolve_data_dir(data_dir)
    infos = [_content(d, split) for split in SPLIT_FILES]
    if all(infos):
        verdicts = {_verdict(split, info) for split, info in zip(SPLIT_FILES, infos)}
        if verdicts == {"known"}:
            return JPEG_LABEL
        if verdicts <= {"known", "other decoder"}:
            return OTHER_DECODER_LABEL
        if any(info["jpeg_sha256"] for info in infos):
            return UNKNOWN_JPEG_LABEL
    source = d / "SOURCE.md"
    if source.exists():
        head = source.read_text(errors="replace")[:2000].lower()
        if "jpeg" in head:
            return JPEG_LABEL
        if "subset" in head:
            return "CIFAR-10 lossless subset"
    return "CIFAR-10"


def content_sha256(data_dir: str | os.PathLike | None = None) -> dict | None:
    """{"train": sha256, "test": sha256} of the images (images.tobytes(), uint8 NHWC) that
    load_cifar10 read from this folder in this process, if it read both splits and the files are
    unchanged since; else None. Costs nothing: it never reads the data."""
    d = resolve_data_dir(data_dir)
    infos = {split: _content(d, split, load=False) for split in SPLIT_FILES}
    if not all(infos.values()):
        return None
    return {split: info["images_sha256"] for split, info in infos.items()}


# What load_cifar10 read, per (folder, split): the source file's stat signature and its content
# hashes, so that labels and run records can say which pixels a run used without reading them again.
_CONTENT: dict[tuple[str, str], tuple[tuple, dict]] = {}
_WARNED: set[str] = set()


def _source_file(d: Path, split: str) -> Path | None:
    for path in (d / f"{split}.npz", d / JPEG_DIR / f"{split}.npz"):
        if path.is_file():
            return path
    return None


def _signature(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _remember(d: Path, split: str, source: Path, images: np.ndarray,
              jpeg_sha256: str | None, images_sha256: str | None = None) -> None:
    try:
        sig = _signature(source)
    except OSError:
        return
    sha = images_sha256 or hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()
    _CONTENT[(str(d.resolve()), split)] = (sig, dict(images_sha256=sha, jpeg_sha256=jpeg_sha256))


def _content(d: Path, split: str, load: bool = True) -> dict | None:
    """The content hashes of a split of folder d (layouts 1 and 2 only): remembered, or (load)
    read now; None where there is no such file or it cannot be read."""
    source = _source_file(d, split)
    if source is None:
        return None
    try:
        sig = _signature(source)
    except OSError:
        return None
    got = _CONTENT.get((str(d.resolve()), split))
    if got is not None and got[0] == sig:
        return got[1]
    if not load:
        return None
    try:
        load_cifar10(split, d, download=False)
    except DatasetError:
        return None
    got = _CONTENT.get((str(d.resolve()), split))
    return got[1] if got is not None else None


def _verdict(split: str, info: dict) -> str:
    """'known' (the known JPEG copy's pixels), 'other decoder' (its JPEG files, other pixels) or
    'unknown'."""
    file_sha, images_sha = KNOWN_JPEG_CIFAR10[split]
    if info["images_sha256"] == images_sha:
        return "known"
    if info["jpeg_sha256"] == file_sha:
        return "other decoder"
    return "unknown"


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_arrays(images: np.ndarray, labels: np.ndarray, where: str,
                 fix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate shape (N >= 1 images), dtype and label range; return (uint8 NHWC images, int64
    labels). `fix`: what the message tells the user to do (default: about a dataset file)."""
    fix = fix or ("re-create it (delete the file to re-download) or point "
                  "--data-dir/AIRBENCH_DATA at a good copy")
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images have dtype {images.dtype}, expected uint8 0-255; {fix}")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DatasetError(f"{where}: images have shape {images.shape}, expected (N, 32, 32, 3) "
                           f"NHWC; {fix}")
    if len(images) < 1:
        raise DatasetError(f"{where}: 0 images, expected at least 1; {fix}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{where}: {len(labels)} labels (shape {labels.shape}) for "
                           f"{len(images)} images; {fix}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels have dtype {labels.dtype}, expected integers; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{where}: labels range {labels.min()}..{labels.max()}, expected 0-9; {fix}")
    return images, labels.astype(np.int64)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != b"PK\x03\x04":  # not a zip archive: say so (numpy's message talks of pickles)
        raise DatasetError(f"{path} is not an .npz archive (truncated, corrupt or another "
                           "format); delete it and run again to rebuild it")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise DatasetError(f"{path}: missing key(s) {sorted(missing)} (has {z.files}); "
                                   "expected keys images (uint8 NHWC) and labels")
            images, labels = z["images"], z["labels"]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                           "delete it and run again to rebuild it") from None
    return check_arrays(images, labels, str(path))


def _unpickle_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = pickle.loads(raw, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt batch
        raise DatasetError(f"{where} is corrupt ({type(exc).__name__}); delete it and download "
                           "the official archive again") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{where}: data has shape {data.shape}, expected (N, 3072)")
    # the official rows are CHW-planar (1024 R, 1024 G, 1024 B), row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_batches(read_member, split: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [_unpickle_batch(read_member(name), f"{where}/{name}") for name in SPLIT_FILES[split]]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    return check_arrays(images, labels, where)


def _read_batches_dir(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    def read(name):
        path = folder / name
        if not path.exists():
            raise DatasetError(f"{path} is missing; extract the full official archive there or "
                               "remove the folder so the archive is downloaded again")
        return path.read_bytes()
    return _read_batches(read, split, str(folder))


def _read_archive(archive: Path, split: str, md5: str | None) -> tuple[np.ndarray, np.ndarray]:
    if md5 is not None:
        got = md5sum(archive)
        if got != md5:
            raise DatasetError(f"{archive} has MD5 {got}, expected {md5} (truncated or corrupt "
                               "download): delete it and run again to re-download")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            def read(name):
                try:
                    return tar.extractfile(f"{BATCHES_DIR}/{name}").read()
                except KeyError:
                    raise DatasetError(f"{archive} has no {BATCHES_DIR}/{name}; it is not the "
                                       "CIFAR-10 python archive: delete it and re-download") from None
            return _read_batches(read, split, str(archive))
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{archive} is truncated or corrupt ({type(exc).__name__}); delete it "
                           "and run again to re-download") from None


def download_archive(data_dir: Path, url: str | None = None, md5: str | None = None) -> Path:
    """Download the official archive into data_dir (atomically) and verify its MD5."""
    url = url or os.environ.get("AIRBENCH_CIFAR10_URL", CIFAR10_URL)
    md5 = md5 or os.environ.get("AIRBENCH_CIFAR10_MD5", CIFAR10_MD5)
    target = data_dir / ARCHIVE_NAME

    def check(tmp: Path) -> None:  # before the rename: a bad download never takes the name
        got = md5sum(tmp)
        if got != md5:
            raise DatasetError(f"downloaded {url} has MD5 {got}, expected {md5}; the download "
                               "was corrupt or is not the official archive: try again")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write_bytes(target, lambda f: shutil.copyfileobj(response, f, 1 << 20),
                               check=check)
    except OSError as exc:
        raise DatasetError(f"could not download CIFAR-10 from {url} ({exc}); download "
                           f"{ARCHIVE_NAME} by hand into {data_dir}, or set AIRBENCH_DATA / "
                           "--data-dir to a folder holding train.npz and test.npz") from None
    return target


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    def write(f):
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels.astype(np.uint8))
        f.write(buf.getbuffer())
    atomic_write_bytes(path, write)


def _load_jpeg(d: Path, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Layout 2 (airbench_common.jpeg decodes), then what load_cifar10 does with any file: warn
    once where the known JPEG files decoded to other pixels, remember the hashes, check."""
    file_sha, images, labels, got, decoder = load_jpeg_npz(path)
    known_file, known_images = KNOWN_JPEG_CIFAR10[split]
    if file_sha == known_file and got != known_images and file_sha not in _WARNED:
        _WARNED.add(file_sha)
        print(f"warning: {path} is the known JPEG CIFAR-10 file, but {decoder or 'this decoder'} "
              f"decodes it to other pixels than Pillow 13.0.0 (images sha256 {got[:12]}..., "
              f"expected {known_images[:12]}...): this is other data, labelled "
              f"'{OTHER_DECODER_LABEL}'; install pillow==13.0.0 for the reference pixels",
              file=sys.stderr)
    _remember(d, split, path, images, file_sha, got)
    return check_arrays(images, labels, str(path))


def load_cifar10(split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, md5: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,32,32,3), labels int64 (N,)) for split 'train' or 'test'."""
    if split not in SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'test'")
    d = resolve_data_dir(data_dir)
    if d.exists() and not d.is_dir():
        raise DatasetError(f"data folder {d} is a file, not a folder; give the folder that holds "
                           f"train.npz/test.npz, {BATCHES_DIR}/ or {ARCHIVE_NAME}")
    npz = d / f"{split}.npz"
    if npz.exists():
        images, labels = _read_npz(npz)
        _remember(d, split, npz, images, None)
        return images, labels
    if (d / JPEG_DIR).is_dir():
        jpeg = d / JPEG_DIR / f"{split}.npz"
        if not jpeg.exists():
            raise DatasetError(f"{jpeg} is missing (the folder {d / JPEG_DIR} holds the JPEG "
                               f"form of CIFAR-10: jpeg/train.npz and jpeg/test.npz); {JPEG_FIX}")
        return _load_jpeg(d, split, jpeg)
    md5 = md5 or os.environ.get("AIRBENCH_CIFAR10_MD5", CIFAR10_MD5)
    if (d / BATCHES_DIR).is_dir():
        images, labels = _read_batches_dir(d / BATCHES_DIR, split)
    else:
        archive = d / ARCHIVE_NAME
        if not archive.exists():
            if not download:
                raise DatasetError(f"no CIFAR-10 in {d} (expected {split}.npz, {BATCHES_DIR}/ or "
                                   f"{ARCHIVE_NAME}); set AIRBENCH_DATA or --data-dir, or allow "
                                   "the download")
            archive = download_archive(d, md5=md5)
        images, labels = _read_archive(archive, split, md5)
    try:  # cache as arrays for next time; a read-only folder is fine, we just don't cache
        _save_npz(npz, images, labels)
    except (OSError, FileWriteError):
        pass
    return images, labels
