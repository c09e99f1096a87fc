"""airbench_common.cli with a stand-in framework (no JAX, no PyTorch): the shared options, the
order of validation, the run loop's records and output, and upstream's table format."""

import hashlib
import signal

import numpy as np
import pytest
from deliver import deliver

from airbench_common import cli, interrupts
from airbench_common.errors import cli_main
from airbench_common.recipes import RECIPES
from airbench_common.records import make_record, read_records
from airbench_common.table import COLUMNS, Table
from airbench_common.validate import OptionError
from airbench_common.workload import Workload


class FakeWorkload(Workload):
    """A workload whose runs call `run(options, seed)`; one extra CLI option, --knob."""
    description, package = "d", "fake"
    extra_options = ("knob",)

    def __init__(self, run, name="fake", devices=("cpu", "cpu:0"), check=None, aliases=None):
        self.name, self._run, self._devices, self._check = name, run, list(devices), check
        self.device_aliases = aliases or {}

    def add_cli_options(self, group):
        group.add_argument("--knob", default="k")

    def cli_extra(self, args):
        return dict(knob=args.knob)

    def devices(self):
        return self._devices

    def check(self, options):
        if self._check is not None:
            self._check(options)
        return super().check(options)

    def run(self, options, seed):
        return self._run(options, seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    return d


def fake(calls, status=lambda seed: "ok", interrupt_at=None, wrapped_interrupt_at=None,
         swallowed_interrupt_at=None):
    def run(o, seed):
        recipe, overrides, i, (train, test) = o.recipe, o.overrides, o.run_label, (o.train_data,
                                                                                  o.test_data)
        assert isinstance(i, int), i   # (a None run index must fail the test, not look like Ctrl-C)
        if interrupt_at == i:
            raise KeyboardInterrupt
        if wrapped_interrupt_at == i:   # as JAX re-raises a Ctrl-C during a pytree comparison
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise ValueError("Exception raised while checking equality") from exc
        if swallowed_interrupt_at == i:  # a real Ctrl-C, caught by library code that goes on
            try:
                deliver(signal.SIGINT)
            except KeyboardInterrupt:
                pass
        calls.append((recipe, dict(overrides), seed, i, len(train[0]), len(test[0]), o.device))
        ok = status(seed) == "ok"
        rec = make_record(recipe=recipe, overrides=overrides, seed=seed, framework="fake",
                          versions={}, device="cpu", dtype="float32", flags={},
                          acc=0.5 if ok else None, acc_tta=0.25 * (1 + seed) if ok else None,
                          tta_level=2, train_seconds=1.5, eval_seconds=0.25, steps=4,
                          status=status(seed), compile_seconds=2.0,
                          data=dict(o.data))
        if not ok:
            rec["error"] = "non-finite training loss in epoch 0"
        return rec
    return FakeWorkload(run)


def test_help_lists_every_recipe_once_and_the_shared_options(capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser(fake([])).parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert sum(line.split()[:1] == [name] for line in out.splitlines()) == 1, name
    for opt in ("--recipe", "--seed", "--runs", "--epochs", "--set", "--n-train", "--data-dir",
                "--device", "--dtype", "--ns-dtype", "--out", "--quiet", "--verbose",
                "fake-only options", "--knob", "float32,bfloat16,float16", "default runs.jsonl"):
        assert opt in out, opt
    assert all(len(line) <= 100 for line in cli.recipe_lines().splitlines())


def test_parser_errors_are_option_errors():
    with pytest.raises(OptionError, match=r"unrecognized arguments: --nope \(see python -m fake "
                                          r"--help\)"):
        cli.build_parser(fake([])).parse_args(["--nope"])


def test_runs_append_records_and_print_a_line_each(tiny, tmp_path, capsys):
    calls, out = [], tmp_path / "runs.jsonl"
    code = cli.main(fake(calls), ["--data-dir", str(tiny), "--recipe", "airbench94_muon",
                                  "--set", "batch_size=16", "--epochs", "2", "--runs", "3",
                                  "--seed", "5", "--n-train", "48", "--device", "CPU",
                                  "--out", str(out)])
    assert code == 0
    assert calls == [("airbench94_muon", {"batch_size": "16", "epochs": 2.0}, s, i, 48, 32, "cpu")
                     for i, s in enumerate((5, 6, 7))]
    recs = read_records(out)
    assert [r["seed"] for r in recs] == [5, 6, 7]
    sha = {split: hashlib.sha256(np.load(tiny / f"{split}.npz")["images"].tobytes()).hexdigest()
           for split in ("train", "test")}
    assert recs[0]["data"] == {"label": "CIFAR-10 (first 48 train)", "dir": str(tiny),
                               "n_train": 48, "n_test": 32, "images_sha256": sha}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("run 0 seed 5: acc 0.5000 acc_tta 1.5000 train 1.50s eval 0.25s "
                        "compile 2.00s")
    assert lines[-1] == f"mean acc_tta 1.7500 (std 0.2500, n=3); records in {out}"


def test_all_data_without_n_train(tiny, tmp_path):
    calls, out = [], tmp_path / "runs.jsonl"
    assert cli.main(fake(calls), ["--data-dir", str(tiny), "--set", "batch_size=16",
                                  "--out", str(out)]) == 0
    assert calls[0][4] == 64 and calls[0][6] is None
    assert read_records(out)[0]["data"]["label"] == "CIFAR-10"


def test_a_diverged_run_is_kept_and_exits_2(tiny, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    code = cli.main(fake([], status=lambda s: "diverged" if s == 1 else "ok"),
                    ["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "3",
                     "--out", str(out)])
    assert code == 2
    assert [r["status"] for r in read_records(out)] == ["ok", "diverged", "ok"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: run 1 (seed 1) diverged: non-finite training loss in epoch 0 "
                   f"(record appended to {out})"]


def test_ctrl_c_names_the_finished_runs(tiny, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    main = cli_main(lambda argv: cli.main(fake([], interrupt_at=2), argv))
    assert main(["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "4",
                 "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted (Ctrl-C) in run 2; 2 finished "
                                               f"run(s) are in {out}")
    assert len(read_records(out)) == 2


def test_ctrl_c_wrapped_by_a_library_is_still_ctrl_c(tiny, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    main = cli_main(lambda argv: cli.main(fake([], wrapped_interrupt_at=1), argv))
    assert main(["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "3",
                 "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted (Ctrl-C) in run 1; 1 finished "
                                               f"run(s) are in {out}")
    assert len(read_records(out)) == 1
    assert not interrupts.interrupted(RuntimeError("x"))   # other errors still propagate as they are


def test_ctrl_c_swallowed_by_a_library_stops_before_the_run_is_stored(tiny, tmp_path, capsys,
                                                                      ctrl_c):
    out, calls = tmp_path / "runs.jsonl", []
    main = cli_main(lambda argv: cli.main(fake(calls, swallowed_interrupt_at=1), argv))
    assert main(["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "3",
                 "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted (Ctrl-C) in run 1; 1 finished "
                                               f"run(s) are in {out}")
    assert len(read_records(out)) == 1 and len(calls) == 2   # run 1 ended, was not stored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # given back


def test_everything_is_checked_before_any_run(tiny, tmp_path):
    calls = []
    for argv, match in [(["--runs", "0"], "--runs 0"), (["--device", "gpu"], "available: cpu"),
                        (["--out", str(tmp_path)], "is a directory"),
                        (["--n-train", "65"], "<= 64"), (["--set", "batch_size=65"], "larger"),
                        (["--epochs", "1", "--set", "epochs=2"], "both given")]:
        with pytest.raises(Exception, match=match):
            cli.main(fake(calls), ["--data-dir", str(tiny), "--out",
                                   str(tmp_path / "r.jsonl"), *argv])
    assert calls == [] and not (tmp_path / "r.jsonl").exists()


def test_framework_check_runs_before_data(tmp_path):
    seen = []

    def check(options):
        seen.append(options.parts["dtype"])
        raise OptionError("nope")
    fw = FakeWorkload(None, name="f", devices=["cpu"], check=check)
    with pytest.raises(OptionError, match="nope"):
        cli.main(fw, ["--data-dir", str(tmp_path / "missing"), "--dtype", "float16",
                      "--out", str(tmp_path / "r.jsonl")])
    assert seen == ["float16"]


def test_table_is_upstreams_format():
    lines = []
    t = Table(lines.append)
    t.head()
    t.row(run=0, epoch=0, train_loss=1.23456, train_acc=0.5, val_acc=None, time_seconds=3.0)
    t.row(final=True, epoch="eval", tta_val_acc=0.9375, time_seconds=4.0)
    head = "|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |"
    assert COLUMNS[0] == "run   " and lines[1] == head
    assert lines[0] == lines[2] == lines[-1] == "-" * len(head)
    assert lines[3] == ("|       0  |      0  |      1.2346  |     0.5000  |           |"
                        "               |        3.0000  |")
    assert lines[4] == ("|          |   eval  |              |             |           |"
                        "       0.9375  |        4.0000  |")
    assert len(lines) == 6 and all(len(x) == len(head) for x in lines)


def test_recipe_lines_text():
    text = cli.recipe_lines()
    assert text.splitlines()[0] == "recipes:"
    lines = dict((line.split()[0], line) for line in text.splitlines()[1:])
    assert lines["airbench93"] == "  airbench93         airbench library train93: ~93%"
    assert lines["airbench94"] == ("  airbench94         airbench library train94 / "
                                   "legacy/airbench94.py: 94.01%, 3.83 s on ...")
    assert len(lines["airbench94"]) == 2 + 18 + 1 + 70
    assert lines["airbench96_faster"] == "  airbench96_faster  airbench96_faster.py: 96.00%, 27.3 s on A100"
    assert lines["airbench95"] == "  airbench95         legacy/airbench95.py: 95.01%, 10.4 s on A100"


def test_recipe_lines_keep_notes_of_up_to_70_characters(monkeypatch):
    class R:
        def __init__(self, notes):
            self.notes = notes
    n70, n71 = "x" * 70, "y" * 71
    monkeypatch.setattr(cli, "RECIPES", {"a": R(n70 + ". more"), "b": R(n71)})
    assert cli.recipe_lines().splitlines()[1:] == [f"  {'a':<18} {n70}",
                                                   f"  {'b':<18} {'y' * 67}..."]


def test_help_texts_and_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    p = cli.build_parser(fake([]))
    a = p.parse_args([])
    assert (a.recipe, a.seed, a.runs, a.epochs, a.sets, a.n_train, a.data_dir, a.device, a.dtype,
            a.ns_dtype, a.out, a.quiet, a.verbose, a.knob) == (
        "airbench94", 0, 1, None, [], None, None, None, None, None, "runs.jsonl", False, False, "k")
    assert (a.precision, a.param_dtype, a.bn_dtype, a.tf32) == (None, None, None, None)
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for piece in ["--recipe NAME recipe to run (listed below; default airbench94)",
                  "--seed SEED seed of the first run; run i uses seed+i",
                  "--runs RUNS number of runs (>= 1)",
                  "--epochs EPOCHS override the recipe's epochs",
                  "--set KEY=VALUE override a recipe hyper-parameter (repeatable), e.g. --set lr=10",
                  "--n-train N train on the first N training images only",
                  "--data-dir DATA_DIR CIFAR-10 folder (default: $AIRBENCH_DATA, else ~/.cache/airbench/cifar10)",
                  "--device DEVICE device to run on, e.g. cpu, cuda, cuda:1 (default: the framework's)",
                  "--precision NAME precision policy: float32, upstream, bfloat16 (default: "
                  "float32 on CPU, upstream on GPU",
                  "--dtype {float32,bfloat16,float16} weights and activations",
                  "--ns-dtype {float32,bfloat16,float16} Muon's Newton-Schulz dtype",
                  "--tf32 {off,conv,on}",
                  "--out OUT JSON-lines file each run's record is appended to (default runs.jsonl)",
                  "--quiet no per-epoch table or progress bar",
                  "--verbose show a traceback on errors", "fake-only options:", "recipes:",
                  "--seeds A:B run seeds A..B-1 (or S1,S2,...) instead of --seed/--runs; the JAX "
                  "side trains them together as one vmapped program, PyTorch one after another",
                  "precision: one policy on both sides (airbench_common/precision.py); the "
                  "options after --precision override one part each, and the record's "
                  "`precision` says what ran --precision NAME",
                  "upstream on GPU: float16 weights and activations, float32 BatchNorm, bfloat16 "
                  "Newton-Schulz, TF32 for convs only) --dtype",
                  "--param-dtype {float32,bfloat16,float16} stored weights only (JAX; PyTorch "
                  "refuses params != compute) --bn-dtype",
                  "--bn-dtype {float32} BatchNorm statistics (float32 only) --ns-dtype",
                  "--tf32 {off,conv,on} TF32 for float32 convs/matmuls on NVIDIA GPUs: off, conv "
                  "(convs only, PyTorch's default), on fake-only options:"]:
        assert piece in text, piece
    # the choices are enforced, not only shown
    for opt, bad in (("--precision", "fp8"), ("--dtype", "half"), ("--param-dtype", "half"),
                     ("--bn-dtype", "float16"), ("--ns-dtype", "int8"), ("--tf32", "maybe")):
        with pytest.raises(OptionError, match=f"argument {opt}: invalid choice: '{bad}'"):
            p.parse_args([opt, bad])
    assert "usage: python -m fake" in text and " d options:" in text


def test_aliases_seeds_and_data_merging(tiny, tmp_path, capsys):
    calls, out = [], tmp_path / "runs.jsonl"

    def run(o, seed):
        calls.append((o.device, o.train_data[0].shape, o.train_data[1].shape))
        # the data identity is given to the run, which writes it as it is
        return make_record(recipe=o.recipe, overrides=o.overrides, seed=seed, framework="fake",
                           versions={}, device="gpu", dtype="float32", flags={},
                           acc=0.5, acc_tta=0.5, tta_level=2, train_seconds=1.0,
                           eval_seconds=0.5, steps=4, status="diverged" if o.run_label else "ok",
                           data=dict(o.data))
    fw = FakeWorkload(run, name="f", devices=["cpu", "gpu", "gpu:0"], aliases={"cuda": "gpu"})
    assert cli.main(fw, ["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "2",
                         "--device", "cuda", "--n-train", "40", "--out", str(out)]) == 2
    assert calls == [("gpu", (40, 32, 32, 3), (40,))] * 2
    recs = read_records(out)
    assert recs[0]["data"]["label"] == "CIFAR-10 (first 40 train)"
    assert recs[0]["data"]["n_train"] == recs[1]["data"]["n_train"] == 40
    err = capsys.readouterr().err.strip()
    assert err == f"error: run 1 (seed 1) diverged:  (record appended to {out})"
    with pytest.raises(OptionError, match=r"--seed 4294967294 with --runs 3 reaches seed "
                                          r"4294967296"):
        cli.main(fw, ["--data-dir", str(tiny), "--seed", str(2 ** 32 - 2), "--runs", "3",
                      "--out", str(out)])
    with pytest.raises(OptionError) as e:
        cli.main(fw, ["--epochs", "1", "--set", "epochs=2", "--out", str(out)])
    assert str(e.value) == "--epochs and --set epochs=... both given; give one"


def test_two_runs_print_the_mean(tiny, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    assert cli.main(fake([]), ["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "2",
                               "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"mean acc_tta 0.3750 (std 0.1768, n=2); records in {out}")


# ------------------------------------------------------------------- --seeds
def _recorder(calls, framework_seeds):
    """A workload that records how it was called; with `framework_seeds` it trains --seeds
    itself (as JAX does, vmapped), else the default: one run per seed."""
    fw = fake(calls)
    if not framework_seeds:
        return fw

    def run_seeds(o, seeds):
        calls.append(("group", o.recipe, dict(o.overrides), list(seeds), len(o.train_data[0]),
                      len(o.test_data[0])))
        for i, seed in enumerate(seeds):
            yield fw.run(o.replace(run_label=i), seed)
    fw.run_seeds = run_seeds
    return fw


@pytest.mark.parametrize("framework_seeds", [True, False])
def test_seeds_run_each_named_seed_once_in_order(tiny, tmp_path, capsys, framework_seeds):
    calls, out = [], tmp_path / "runs.jsonl"
    assert cli.main(_recorder(calls, framework_seeds),
                    ["--data-dir", str(tiny), "--set", "batch_size=16", "--seeds", "4,2,9",
                     "--n-train", "40", "--out", str(out)]) == 0
    runs = [c for c in calls if c[0] != "group"]
    assert [(c[2], c[3]) for c in runs] == [(4, 0), (2, 1), (9, 2)]
    assert all(c[:2] == ("airbench94", {"batch_size": "16"}) and c[4:6] == (40, 32) for c in runs)
    groups = [c for c in calls if c[0] == "group"]
    assert groups == ([("group", "airbench94", {"batch_size": "16"}, [4, 2, 9], 40, 32)]
                      if framework_seeds else [])
    assert [r["seed"] for r in read_records(out)] == [4, 2, 9]
    # acc_tta 0.25 * (1 + seed): 1.25, 0.75, 2.5
    assert capsys.readouterr().out.splitlines()[-1] == (f"mean acc_tta 1.5000 (std 0.9014, n=3); "
                                                        f"records in {out}")


@pytest.mark.parametrize("other", [["--seed", "1"], ["--runs", "2"], ["--seed", "0", "--runs", "3"]])
def test_seeds_with_seed_or_runs_is_refused(tiny, tmp_path, other):
    calls = []
    with pytest.raises(OptionError) as e:
        cli.main(_recorder(calls, True), ["--data-dir", str(tiny), "--seeds", "0:2", *other,
                                          "--out", str(tmp_path / "r.jsonl")])
    assert str(e.value) == "--seeds and --seed/--runs both given; give one" and calls == []
    with pytest.raises(OptionError, match="--seeds '2:2' names no seed"):
        cli.main(_recorder(calls, True), ["--data-dir", str(tiny), "--seeds", "2:2",
                                          "--out", str(tmp_path / "r.jsonl")])


def test_a_record_of_the_wrong_seed_stops_the_runs(tiny, tmp_path):
    fw = fake([])
    wrong = FakeWorkload(lambda o, seed: fw.run(o, seed + 1))
    out = tmp_path / "runs.jsonl"
    with pytest.raises(RuntimeError) as e:
        cli.main(wrong, ["--data-dir", str(tiny), "--set", "batch_size=16", "--seed", "3",
                         "--out", str(out)])
    assert str(e.value) == "run 0: record of seed 4, expected seed 3" and not out.exists()


# ------------------------------------------------------------------- output and data label
def test_each_run_line_is_flushed_when_the_run_ends(tiny, tmp_path, monkeypatch):
    """A watcher of a piped stdout sees each run as it finishes, not at exit."""
    class Stdout:
        def __init__(self):
            self.text, self.flushed = "", []

        def write(self, s):
            self.text += s

        def flush(self):
            self.flushed.append(self.text)
    stdout = Stdout()
    monkeypatch.setattr(cli.sys, "stdout", stdout)
    assert cli.main(fake([]), ["--data-dir", str(tiny), "--set", "batch_size=16", "--runs", "2",
                               "--out", str(tmp_path / "r.jsonl")]) == 0
    assert [s.count("\n") for s in stdout.flushed[:2]] == [1, 2]
    assert stdout.flushed[0].startswith("run 0 seed 0: acc 0.5000")


def test_records_name_the_data_dir_that_was_given(tiny, tmp_path, monkeypatch):
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    for f in tiny.iterdir():
        (jpeg / f.name).symlink_to(f)
    (jpeg / "SOURCE.md").write_text("CIFAR-10, every image decoded from JPEG\n")
    monkeypatch.delenv("AIRBENCH_DATA", raising=False)
    out = tmp_path / "r.jsonl"
    assert cli.main(fake([]), ["--data-dir", str(jpeg), "--set", "batch_size=16",
                               "--out", str(out)]) == 0
    assert read_records(out)[0]["data"]["label"] == "JPEG CIFAR-10"
