"""Layout 2 of a CIFAR-10 data folder: jpeg/<split>.npz, the images as JPEG files.

Keys: `jpeg` (uint8, every file's bytes end to end),
`offsets` (int64, n+1: image i is jpeg[offsets[i]:offsets[i+1]]) and `labels` (uint8). Every
field is checked, and every way a file can be broken is one DatasetError line naming the file.
The images are decoded with Pillow (an optional dependency: `pip install pillow` or the `jpeg`
extra) on first use; the decoded arrays are cached in $XDG_CACHE_HOME (or
~/.cache)/airbench/cifar10-jpeg-decoded/<file sha256>.npz with their sha256 and the decoder that
made them; the sha256 is checked on every read (a damaged cache is rebuilt, a cache of another
decoder is decoded again), and the cache is never written next to the data (that folder may be
read-only).

This module only reads and decodes: what the pixels are called (the known JPEG copy, another
decoder's pixels, unknown files) is decided by airbench_common.data, which finds the folder
layout and calls load_jpeg_npz.
"""
from __future__ import annotations

from .errors import DatasetError
from .files import FileWriteError, atomic_write_bytes, user_cache_dir

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

PILLOW_HINT = "pip install pillow (or the extra: pip install 'airbench-jax[jpeg]')"
JPEG_FIX = ("replace it with an intact copy (../shared/data/cifar10-jpeg/jpeg/ has the known one) "
            "or point --data-dir/AIRBENCH_DATA at another folder")


def jpeg_cache_dir() -> Path:
    """Where decoded JPEG files are cached: the user's cache folder, never the data folder."""
    return user_cache_dir() / "airbench" / "cifar10-jpeg-decoded"


def _pillow(where: Path):
    """PIL.Image, or one DatasetError line saying how to install Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(f"{where} holds JPEG files and decoding them needs Pillow, which is "
                           f"not installed: {PILLOW_HINT}") from None
    return Image


def jpeg_decoder() -> str | None:
    """The decoder this process would use ('Pillow X, libjpeg Y'), or None without Pillow."""
    try:
        import PIL
        from PIL import features
    except ImportError:
        return None
    return f"Pillow {PIL.__version__}, libjpeg {features.version('jpg')}"


def _read_jpeg_npz(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(file sha256, jpeg bytes, offsets, labels) of a jpeg/<split>.npz, every field checked."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:4] != b"PK\x03\x04":
        raise DatasetError(f"{path} is not an .npz archive (truncated, corrupt or another "
                           f"format); {JPEG_FIX}")
    file_sha = hashlib.sha256(raw).hexdigest()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            missing = {"jpeg", "offsets", "labels"} - set(z.files)
            if missing:
                raise DatasetError(f"{path}: missing key(s) {sorted(missing)} (has {z.files}); "
                                   "expected jpeg (uint8 bytes), offsets (int64, n+1) and "
                                   f"labels; {JPEG_FIX}")
            jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                           f"{JPEG_FIX}") from None
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise DatasetError(f"{path}: jpeg has dtype {jpeg.dtype} and shape {jpeg.shape}, expected "
                           f"1-D uint8 bytes; {JPEG_FIX}")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.ndim != 1 or len(offsets) < 1:
        raise DatasetError(f"{path}: offsets have dtype {offsets.dtype} and shape {offsets.shape}, "
                           f"expected 1-D integers (n+1 for n images); {JPEG_FIX}")
    n = len(offsets) - 1
    if labels.ndim != 1 or len(labels) != n:
        raise DatasetError(f"{path}: {labels.size} labels (shape {labels.shape}) but offsets "
                           f"give {n} images (offsets must have n+1 entries); {JPEG_FIX}")
    if not np.issubdtype(labels.dtype, np.integer) or (n and (labels.min() < 0
                                                              or labels.max() > 9)):
        lo, hi = (labels.min(), labels.max()) if n else ("", "")
        raise DatasetError(f"{path}: labels ({labels.dtype}, range {lo}..{hi}) must be integers "
                           f"0-9; {JPEG_FIX}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0:
        raise DatasetError(f"{path}: offsets start at {offsets[0]}, expected 0; {JPEG_FIX}")
    back = np.flatnonzero(np.diff(offsets) <= 0)
    if len(back):
        i = int(back[0])
        raise DatasetError(f"{path}: offsets are not increasing (image {i}: {offsets[i]} to "
                           f"{offsets[i + 1]}); {JPEG_FIX}")
    if offsets[-1] != len(jpeg):
        where = "past the end of" if offsets[-1] > len(jpeg) else "short of the end of"
        raise DatasetError(f"{path}: offsets end at byte {offsets[-1]}, {where} the {len(jpeg)} "
                           f"bytes of jpeg (truncated?); {JPEG_FIX}")
    return file_sha, jpeg, offsets, labels


def _decode_jpegs(path: Path, jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Every image decoded with Pillow (Image.open(...).convert('RGB')), uint8 (n, 32, 32, 3)."""
    Image = _pillow(path)
    from PIL import UnidentifiedImageError

    n = len(offsets) - 1
    out = np.empty((n, 32, 32, 3), np.uint8)
    data = jpeg.tobytes()
    for i in range(n):
        why = None
        try:
            with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
                if im.format != "JPEG":
                    why = f"is a {im.format} image, not a JPEG"
                elif im.size != (32, 32) or im.mode != "RGB":
                    why = (f"decodes to {im.size[0]}x{im.size[1]} {im.mode}, expected 32x32 RGB")
                else:
                    out[i] = np.asarray(im.convert("RGB"))
        except UnidentifiedImageError:
            why = "is not a decodable JPEG (not an image file)"
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            why = f"is not a decodable JPEG ({type(exc).__name__}: {exc})"
        if why is not None:
            raise DatasetError(f"{path}: image {i} {why}; {JPEG_FIX}")
    return out


def _read_jpeg_cache(cache: Path, labels: np.ndarray, decoder: str | None):
    """(images, images sha256) from a cache file that passes every check, else (None, why):
    why is None for no file or a file of another decoder, else what is wrong with it."""
    if not cache.exists():
        return None, None
    try:
        with open(cache, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return None, "not an .npz archive"
        with np.load(cache, allow_pickle=False) as z:
            if not {"images", "labels", "images_sha256", "decoder"} <= set(z.files):
                return None, f"missing keys (has {z.files})"
            made_by = str(z["decoder"])
            if decoder is not None and made_by != decoder:
                return None, None                    # stale: decode again with this decoder
            images, cached_labels, sha = z["images"], z["labels"], str(z["images_sha256"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if images.dtype != np.uint8 or images.shape != (len(labels), 32, 32, 3):
        return None, f"images {images.dtype} {images.shape}"
    if not np.array_equal(cached_labels, labels):
        return None, "labels differ from the JPEG file's"
    if hashlib.sha256(images.data).hexdigest() != sha:
        return None, "images do not match their recorded sha256"
    return images, sha


def _write_jpeg_cache(cache: Path, images: np.ndarray, labels: np.ndarray, sha: str,
                      decoder: str, source: Path) -> None:
    def write(f):
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels, images_sha256=np.array(sha),
                 decoder=np.array(decoder), source=np.array(str(source)))
        f.write(buf.getbuffer())
    try:  # an unwritable cache folder only costs the decode next time
        atomic_write_bytes(cache, write)
    except (OSError, FileWriteError):
        pass


def load_jpeg_npz(path: Path) -> tuple[str, np.ndarray, np.ndarray, str, str | None]:
    """(file sha256, images uint8 (n, 32, 32, 3), labels as stored, images sha256, decoder) of a
    jpeg/<split>.npz: from the decoded cache when it passes every check, else decoded now (and
    cached). DatasetError for a broken file or a missing Pillow."""
    file_sha, jpeg, offsets, labels = _read_jpeg_npz(path)
    cache = jpeg_cache_dir() / f"{file_sha}.npz"
    decoder = jpeg_decoder()
    images, got = _read_jpeg_cache(cache, labels, decoder)
    if images is None:
        if got is not None:
            print(f"note: {cache}: damaged decoded cache ({got}); decoding {path} again",
                  file=sys.stderr)
        images = _decode_jpegs(path, jpeg, offsets)
        got = hashlib.sha256(images.data).hexdigest()
        _write_jpeg_cache(cache, images, labels, got, decoder, path)
    return file_sha, images, labels, got, decoder
