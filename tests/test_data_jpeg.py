"""The JPEG form of CIFAR-10 (a data folder holding jpeg/train.npz, jpeg/test.npz): decoding with
Pillow, the decoded cache in the user's cache folder, labels and identity by content, and one-line
errors for every way such a file can be broken. Small synthetic files; one slow test decodes the
real jpeg/test.npz."""
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from airbench_common import data as D
from airbench_common import jpeg as J
from airbench_common.data import DatasetError, load_cifar10
from airbench_common.records import data_identity

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = os.environ.get("AIRBENCH_DATA")   # read before the fixture below hides it


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """A private cache folder and no memory of what other tests loaded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AIRBENCH_DATA", raising=False)
    monkeypatch.setattr(D, "_CONTENT", {})
    monkeypatch.setattr(D, "_WARNED", set())


def encode(image: np.ndarray, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def images_of(n, seed):
    """Smooth random images (gradients plus noise), so that JPEG keeps them recognisable."""
    rng = np.random.default_rng(seed)
    ramp = (np.linspace(0, 200, 32)[None, :, None, None]
            + np.linspace(0, 50, 32)[None, None, :, None])
    noise = rng.integers(0, 56, (n, 32, 32, 3))
    return (ramp + noise).astype(np.uint8)


def save_jpeg_npz(path: Path, payloads, labels, offsets=None, **keys) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = np.frombuffer(b"".join(payloads), np.uint8)
    if offsets is None:
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in payloads])]).astype(np.int64)
    arrays = dict(jpeg=blob, offsets=offsets, labels=np.asarray(labels, np.uint8))
    arrays.update(keys)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def payloads_of(n, seed):
    return [encode(im, quality=90) for im in images_of(n, seed)]


@pytest.fixture
def jpeg_dir(tmp_path):
    """(folder holding only jpeg/, {split: (payloads, labels)})"""
    d, made = tmp_path / "jpegdata", {}
    for split, n, seed in (("train", 12, 0), ("test", 6, 1)):
        payloads, labels = payloads_of(n, seed), np.arange(n) % 10
        save_jpeg_npz(d / "jpeg" / f"{split}.npz", payloads, labels)
        made[split] = payloads, labels
    return d, made


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def known_as(monkeypatch, d: Path, pixels_too=True):
    """Make d's synthetic files 'the known JPEG copy' (its hashes in KNOWN_JPEG_CIFAR10)."""
    table = {}
    for split in ("train", "test"):
        path = d / "jpeg" / f"{split}.npz"
        with np.load(path) as z:
            j, o = z["jpeg"].tobytes(), z["offsets"]
        images = np.stack([decode(j[o[i]:o[i + 1]]) for i in range(len(o) - 1)])
        table[split] = (sha(path), hashlib.sha256(images.tobytes()).hexdigest()
                        if pixels_too else "0" * 64)
    monkeypatch.setattr(D, "KNOWN_JPEG_CIFAR10", table)


# ----------------------------------------------------------------------------- decoding, cache
def test_a_jpeg_folder_loads_as_pillow_decodes_it_and_is_cached(jpeg_dir, tmp_path, monkeypatch):
    d, made = jpeg_dir
    for split in ("train", "test"):
        payloads, labels = made[split]
        images, got_labels = load_cifar10(split, d, download=False)
        assert images.dtype == np.uint8 and images.shape == (len(payloads), 32, 32, 3)
        np.testing.assert_array_equal(images, np.stack([decode(p) for p in payloads]))
        assert got_labels.dtype == np.int64 and got_labels.tolist() == labels.tolist()
        cache = tmp_path / "cache" / "airbench" / "cifar10-jpeg-decoded" / \
            f"{sha(d / 'jpeg' / f'{split}.npz')}.npz"
        assert cache.is_file() and oct(cache.stat().st_mode & 0o777) == "0o644"
        with np.load(cache) as z:
            assert str(z["images_sha256"]) == hashlib.sha256(images.tobytes()).hexdigest()
            assert str(z["decoder"]) == J.jpeg_decoder()
    # nothing written beside the data
    assert sorted(p.name for p in d.rglob("*")) == ["jpeg", "test.npz", "train.npz"]
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    def no_decode(*a):
        raise AssertionError("decoded again despite a good cache")
    monkeypatch.setattr(J, "_decode_jpegs", no_decode)
    again, _ = load_cifar10("train", d)
    np.testing.assert_array_equal(again, np.stack([decode(p) for p in made["train"][0]]))


def test_the_cache_folder_follows_xdg_cache_home_or_home(tmp_path, monkeypatch):
    assert J.jpeg_cache_dir() == tmp_path / "cache" / "airbench" / "cifar10-jpeg-decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert J.jpeg_cache_dir() == tmp_path / "home" / ".cache" / "airbench" / "cifar10-jpeg-decoded"


def test_an_unwritable_cache_folder_only_costs_the_decode(jpeg_dir, tmp_path, monkeypatch):
    d, made = jpeg_dir
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocker"))
    images, _ = load_cifar10("test", d)
    np.testing.assert_array_equal(images, np.stack([decode(p) for p in made["test"][0]]))


def _cache_of(d, tmp_path, split="test"):
    return tmp_path / "cache" / "airbench" / "cifar10-jpeg-decoded" / \
        f"{sha(d / 'jpeg' / f'{split}.npz')}.npz"


def _rewrite(cache: Path, **change):
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(change)
    for k in [k for k, v in arrays.items() if v is None]:
        del arrays[k]
    np.savez(cache, **arrays)                      # the name ends in .npz: written in place


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pixel", "labels", "no sha"])
def test_a_damaged_cache_is_rebuilt_not_trusted(jpeg_dir, tmp_path, capsys, damage):
    d, made = jpeg_dir
    good, _ = load_cifar10("test", d)
    cache = _cache_of(d, tmp_path)
    if damage == "garbage":
        cache.write_bytes(b"not a zip at all")
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "pixel":                       # same recorded sha256, one pixel changed
        with np.load(cache) as z:
            bad = z["images"].copy()
        bad[2, 5, 5, 1] ^= 1
        _rewrite(cache, images=bad)
    elif damage == "labels":
        _rewrite(cache, labels=np.zeros(6, np.uint8) + 9)
    else:
        _rewrite(cache, images_sha256=None)
    capsys.readouterr()
    images, labels = load_cifar10("test", d)
    np.testing.assert_array_equal(images, good)
    assert labels.tolist() == made["test"][1].tolist()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged decoded cache" in err and str(cache) in err
    assert J._read_jpeg_cache(cache, made["test"][1].astype(np.uint8), J.jpeg_decoder())[0] \
        is not None                               # rebuilt: good again


def test_a_cache_of_another_decoder_is_decoded_again(jpeg_dir, tmp_path, monkeypatch, capsys):
    d, _ = jpeg_dir
    load_cifar10("test", d)
    monkeypatch.setattr(J, "jpeg_decoder", lambda: "Pillow 99, libjpeg 99")
    calls = []
    real = J._decode_jpegs
    monkeypatch.setattr(J, "_decode_jpegs", lambda *a: calls.append(1) or real(*a))
    load_cifar10("test", d)
    assert calls == [1] and capsys.readouterr().err == ""      # stale, not damaged: no note
    with np.load(_cache_of(d, tmp_path)) as z:
        assert str(z["decoder"]) == "Pillow 99, libjpeg 99"


def test_without_pillow_one_line_says_how_to_install_it(jpeg_dir, monkeypatch):
    d, _ = jpeg_dir
    for mod in ("PIL", "PIL.Image", "PIL.features"):
        monkeypatch.setitem(sys.modules, mod, None)   # `import PIL` raises ImportError
    assert J.jpeg_decoder() is None
    with pytest.raises(DatasetError) as e:
        load_cifar10("train", d)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(d / "jpeg" / "train.npz"))
    assert "pip install pillow" in msg and "airbench-jax[jpeg]" in msg


def test_a_jpeg_folder_without_one_split_names_the_missing_file(jpeg_dir):
    d, _ = jpeg_dir
    (d / "jpeg" / "test.npz").unlink()
    with pytest.raises(DatasetError, match=r"jpeg/test.npz is missing"):
        load_cifar10("test", d)


def test_train_npz_wins_over_jpeg(jpeg_dir):
    d, _ = jpeg_dir
    np.savez(d / "train.npz", images=np.zeros((3, 32, 32, 3), np.uint8),
             labels=np.zeros(3, np.uint8))
    assert load_cifar10("train", d)[0].shape == (3, 32, 32, 3)


# ---------------------------------------------------------------------- broken files: one line
def _good(n=6, seed=3):
    return payloads_of(n, seed), np.arange(n) % 10


def _case(name, path: Path):
    payloads, labels = _good()
    if name == "not a zip":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"GIF89a this is not an npz")
        return "is not an .npz archive"
    if name == "truncated zip":
        save_jpeg_npz(path, payloads, labels)
        path.write_bytes(path.read_bytes()[:-200])
        return "is truncated or corrupt"
    if name == "missing key":
        save_jpeg_npz(path, payloads, labels, offsets=None)
        with np.load(path) as z:
            np.savez(path, jpeg=z["jpeg"], labels=z["labels"])
        return r"missing key\(s\) \['offsets'\]"
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in payloads])]).astype(np.int64)
    if name == "offsets not monotonic":
        offsets[3] = offsets[1]
        save_jpeg_npz(path, payloads, labels, offsets=offsets)
        return r"offsets are not increasing \(image 2: "
    if name == "offsets not n+1":
        save_jpeg_npz(path, payloads, labels, offsets=offsets[:-1])
        return r"6 labels \(shape \(6,\)\) but offsets give 5 images"
    if name == "offsets past the end":
        offsets[-1] += 10
        save_jpeg_npz(path, payloads, labels, offsets=offsets)
        return "past the end of the"
    if name == "offsets not from 0":
        save_jpeg_npz(path, payloads, labels, offsets=offsets + 1)
        return "offsets start at 1, expected 0"
    if name == "offsets not integers":
        save_jpeg_npz(path, payloads, labels, offsets=offsets.astype(np.float64))
        return "offsets have dtype float64"
    if name == "labels too few":
        save_jpeg_npz(path, payloads, labels[:4], offsets=offsets)
        return "4 labels"
    if name == "label out of range":
        labels = labels.copy()
        labels[2] = 10
        save_jpeg_npz(path, payloads, labels)
        return r"labels \(uint8, range 0..10\) must be integers 0-9"
    if name == "jpeg not bytes":
        save_jpeg_npz(path, payloads, labels, jpeg=np.zeros(offsets[-1], np.int16))
        return "jpeg has dtype int16"
    if name == "corrupt payload":
        payloads[3] = b"\x00\x00" + payloads[3][2:]        # no JPEG start marker
        save_jpeg_npz(path, payloads, labels)
        return r"image 3 is not a decodable JPEG \(not an image file\)"
    if name == "truncated payload":
        payloads[4] = payloads[4][: len(payloads[4]) // 2]
        save_jpeg_npz(path, payloads, labels)
        return r"image 4 is not a decodable JPEG \(OSError: "
    if name == "16x16":
        payloads[1] = encode(images_of(1, 9)[0][:16, :16])
        save_jpeg_npz(path, payloads, labels)
        return "image 1 decodes to 16x16 RGB, expected 32x32 RGB"
    if name == "grey":
        payloads[5] = encode(images_of(1, 9)[0][:, :, 0])
        save_jpeg_npz(path, payloads, labels)
        return "image 5 decodes to 32x32 L, expected 32x32 RGB"
    if name == "png":
        payloads[0] = encode(images_of(1, 9)[0], fmt="PNG")
        save_jpeg_npz(path, payloads, labels)
        return "image 0 is a PNG image, not a JPEG"
    raise AssertionError(name)


CASES = ["not a zip", "truncated zip", "missing key", "offsets not monotonic", "offsets not n+1",
         "offsets past the end", "offsets not from 0", "offsets not integers", "labels too few",
         "label out of range", "jpeg not bytes", "corrupt payload", "truncated payload", "16x16",
         "grey", "png"]


@pytest.mark.parametrize("name", CASES)
def test_a_broken_jpeg_file_gives_one_line_naming_it(tmp_path, name):
    path = tmp_path / "bad" / "jpeg" / "train.npz"
    match = _case(name, path)
    with pytest.raises(DatasetError, match=match) as e:
        load_cifar10("train", tmp_path / "bad")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert msg.endswith(J.JPEG_FIX)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.npz"))


def test_the_cli_exits_2_with_one_line_for_a_bad_jpeg_folder(tmp_path):
    """The real front door (python -m airbench_torch): exit 2, one line on stderr, no traceback."""
    path = tmp_path / "bad" / "jpeg" / "train.npz"
    _case("corrupt payload", path)
    _case("corrupt payload", tmp_path / "bad" / "jpeg" / "test.npz")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env.pop("AIRBENCH_TRACEBACK", None)
    p = subprocess.run([sys.executable, "-m", "airbench_torch", "--data-dir", str(tmp_path / "bad"),
                        "--out", str(tmp_path / "r.jsonl")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: {path}: image 3 is not a decodable JPEG")
    assert not (tmp_path / "r.jsonl").exists()


# --------------------------------------------------------------------- labels and identity
def test_unknown_jpeg_files_are_not_called_jpeg_cifar10(jpeg_dir):
    d, _ = jpeg_dir
    assert D.dataset_label(d) == D.UNKNOWN_JPEG_LABEL
    (d / "SOURCE.md").write_text("CIFAR-10 decoded from JPEG\n")   # a claim is not content
    assert D.dataset_label(d) == D.UNKNOWN_JPEG_LABEL


def test_known_content_has_one_label_and_identity_in_either_layout(jpeg_dir, tmp_path, monkeypatch):
    """The jpeg-only folder and a folder of the same pixels as train.npz/test.npz (no SOURCE.md,
    no jpeg/) belong to one comparison: same data_label, same data_identity."""
    from parity.study import config as C

    d, _ = jpeg_dir
    known_as(monkeypatch, d)
    npz = tmp_path / "npzdata"
    npz.mkdir()
    for split in ("train", "test"):
        images, labels = load_cifar10(split, d)
        np.savez(npz / f"{split}.npz", images=images, labels=labels.astype(np.uint8))
    monkeypatch.setattr(D, "_CONTENT", {})          # a fresh process: labels without a prior load
    configs = {}
    for folder in (d, npz):
        assert D.dataset_label(folder) == D.JPEG_LABEL
        probe = C.make_config("airbench94_muon", "smoke", {}, ["jax", "torch"], 3, 0.5,
                              str(folder))
        tr, te = C.load_subsets(probe)
        configs[folder] = C.make_config("airbench94_muon", "smoke", {}, ["jax", "torch"], 3,
                                        0.5, str(folder), identity=C.data_identity(tr, te))
    a, b = configs[d], configs[npz]
    assert a["data_label"] == b["data_label"] == D.JPEG_LABEL
    assert a["data_identity"] == b["data_identity"]
    assert {k: a[k] for k in C.IDENTITY_KEYS} == {k: b[k] for k in C.IDENTITY_KEYS}
    C.check_config(a, b, tmp_path)             # one comparison: no error
    # and the run records' data field carries the same pixels' hashes
    ra, rb = (data_identity(str(f), 12, 6, arrays=False) for f in (d, npz))
    assert ra["images_sha256"] == rb["images_sha256"] == {
        s: D.KNOWN_JPEG_CIFAR10[s][1] for s in ("train", "test")}
    assert (ra["label"], rb["label"]) == (D.JPEG_LABEL, D.JPEG_LABEL)


def test_the_known_files_decoded_to_other_pixels_are_other_data(jpeg_dir, monkeypatch, capsys):
    d, _ = jpeg_dir
    known_as(monkeypatch, d, pixels_too=False)       # as if another libjpeg decoded them
    capsys.readouterr()
    load_cifar10("train", d)
    load_cifar10("train", d)
    label = D.dataset_label(d)
    assert label == D.OTHER_DECODER_LABEL and label != D.JPEG_LABEL
    assert "another libjpeg" in label
    err = capsys.readouterr().err.splitlines()
    assert len([e for e in err if e.startswith("warning: ")]) == 2   # once per file (train, test)
    assert all("other pixels than Pillow 13.0.0" in e and "other data" in e for e in err)
    assert data_identity(str(d), 12, 6, arrays=False)["label"] == D.OTHER_DECODER_LABEL


def test_records_tell_different_pixels_apart(tmp_path):
    folders = []
    for seed in (0, 1):
        f = tmp_path / f"d{seed}"
        f.mkdir()
        for split in ("train", "test"):
            save_jpeg_npz(f / "jpeg" / f"{split}.npz", payloads_of(4, seed), np.arange(4))
        folders.append(f)
    assert D.content_sha256(folders[0]) is None      # never reads the data itself
    before = data_identity(str(folders[0]), 4, 4, arrays=False)   # the label reads the content
    for f in folders:
        load_cifar10("train", f), load_cifar10("test", f)
    a, b = (data_identity(str(f), 4, 4, arrays=False) for f in folders)
    assert before == a
    assert a["label"] == b["label"] == D.UNKNOWN_JPEG_LABEL
    assert a["images_sha256"] != b["images_sha256"]
    assert set(a) == {"label", "dir", "n_train", "n_test", "images_sha256"}
    images = load_cifar10("train", folders[0])[0]
    assert a["images_sha256"]["train"] == hashlib.sha256(images.tobytes()).hexdigest()


def test_the_known_hashes_are_those_of_source_md():
    source = Path("/work/shared/data/cifar10-jpeg/SOURCE.md")
    if not source.exists():
        pytest.skip(f"{source} not present")
    text = source.read_text()
    for file_sha, images_sha in D.KNOWN_JPEG_CIFAR10.values():
        assert file_sha in text and images_sha in text


# ----------------------------------------------------------------------- the real file (slow)
@pytest.mark.slow
def test_the_real_jpeg_test_split_decodes_to_the_npz_pixels(tmp_path):
    d = REAL_DATA
    if not d:
        pytest.skip("no dataset configured: set AIRBENCH_DATA to ../shared/data/cifar10-jpeg "
                    "(its jpeg/ folder is decoded here)")
    jpeg, npz = Path(d, "jpeg", "test.npz"), Path(d, "test.npz")
    if not (jpeg.exists() and npz.exists()):
        pytest.skip(f"AIRBENCH_DATA={d} holds no jpeg/test.npz and test.npz (the dataset's JPEG "
                    "form and its decoded pixels)")
    folder = tmp_path / "jpeg-only"
    (folder / "jpeg").mkdir(parents=True)
    (folder / "jpeg" / "test.npz").symlink_to(jpeg)
    images, labels = load_cifar10("test", folder)
    with np.load(npz) as z:
        np.testing.assert_array_equal(images, z["images"])
        np.testing.assert_array_equal(labels, z["labels"])
    assert hashlib.sha256(images.tobytes()).hexdigest() == D.KNOWN_JPEG_CIFAR10["test"][1]
    assert sha(jpeg) == D.KNOWN_JPEG_CIFAR10["test"][0]
    again, _ = load_cifar10("test", folder)              # from the cache
    np.testing.assert_array_equal(again, images)


# ------------------------------------------------------------------ every entry point reads it
def test_both_library_apis_load_a_jpeg_only_folder_to_the_decoded_pixels(jpeg_dir):
    d, made = jpeg_dir
    want = np.stack([decode(p) for p in made["test"][0]])
    import airbench_jax
    import airbench_torch
    jl = airbench_jax.CifarLoader(str(d), train=False, batch_size=6)
    tl = airbench_torch.CifarLoader(str(d), train=False, batch_size=6, device="cpu")
    assert np.array_equal(np.asarray(jl.labels), made["test"][1])
    assert np.array_equal(tl.labels.numpy(), made["test"][1])
    # each loader keeps the images in its own layout: undo it and compare with Pillow's pixels
    j = np.asarray(jl.images)
    t = tl.images.permute(0, 2, 3, 1).float().numpy()
    for got in (j, t):
        got = got if got.dtype == np.uint8 else np.rint(got * (255.0 if got.max() <= 1.5 else 1))
        assert np.array_equal(got.astype(np.uint8), want)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["airbench_torch", "airbench_jax"])
def test_both_clis_train_on_a_jpeg_only_folder(jpeg_dir, tmp_path, module):
    d, made = jpeg_dir
    out = tmp_path / "runs.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", module, "--recipe", "airbench94", "--data-dir", str(d),
         "--epochs", "1", "--set", "widths=4,8,8", "--set", "batch_size=4",
         "--set", "whiten_images=12", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode in (0, 2), proc.stderr       # 2: a tiny net may collapse (recorded)
    rec = __import__("json").loads(out.read_text().splitlines()[0])
    assert rec["data"]["n_train"] == 12 and rec["data"]["n_test"] == 6
    assert "Traceback" not in proc.stderr
