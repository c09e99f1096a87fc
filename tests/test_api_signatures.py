"""Both implementations honour upstream airbench's library API: the published `airbench` 0.1.8
package's names and parameter order, with our extra parameters only after upstream's.

Upstream's signatures are kept here as data (read from the package's source; never imported)."""
import inspect

import pytest

P = inspect.Parameter
TRAIN = ("train_loader", "epochs", "label_smoothing", "learning_rate", "bias_scaler", "momentum",
         "weight_decay", "whiten_bias_epochs", "tta_level", "make_net", "run", "verbose")
# name -> upstream's parameters in order ("*args"/"**kwargs" for the warmup wrappers)
UPSTREAM = {
    **{f"train9{i}": TRAIN for i in (3, 4, 5, 6)},
    **{f"make_net9{i}": ("widths", "batchnorm_momentum") for i in (3, 4, 5, 6)},
    **{f"warmup9{i}": ("*args", "**kwargs") for i in (3, 4, 5, 6)},
    "infer": ("model", "loader", "tta_level"),
    "evaluate": ("model", "loader", "tta_level"),
    "CifarLoader": ("path", "train", "batch_size", "aug", "drop_last", "shuffle", "altflip", "gpu"),
}
# the upstream parameters with no default (the rest have one)
REQUIRED = {"infer": {"model", "loader"}, "evaluate": {"model", "loader"}, "CifarLoader": {"path"}}


def _spelled(p: inspect.Parameter) -> str:
    return {P.VAR_POSITIONAL: "*", P.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name


def check_against_upstream(obj, name):
    """Return a list of problems (empty: obj honours upstream's signature of `name`)."""
    sig = inspect.signature(obj)
    params = list(sig.parameters.values())
    want = UPSTREAM[name]
    problems = []
    got = [_spelled(p) for p in params[:len(want)]]
    if got != list(want):
        problems.append(f"{name}: first parameters {got} != upstream's {list(want)}")
        return problems
    for p in params[:len(want)]:
        if p.kind in (P.POSITIONAL_ONLY, P.KEYWORD_ONLY):
            problems.append(f"{name}: {p.name} must be positional-or-keyword as upstream")
        if p.kind == P.POSITIONAL_OR_KEYWORD and p.default is P.empty \
                and p.name not in REQUIRED.get(name, ()):
            problems.append(f"{name}: {p.name} needs a default as upstream")
    for p in params[len(want):]:   # extras: never required, so upstream's calls stay valid
        if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.default is P.empty:
            problems.append(f"{name}: extra parameter {p.name} has no default")
    return problems


def _module(side):
    if side == "torch":
        pytest.importorskip("torch")
        import airbench_torch as m
    else:
        pytest.importorskip("jax")
        import airbench_jax as m
    return m


@pytest.mark.parametrize("side", ["jax", "torch"])
@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_signature_matches_upstream(side, name):
    m = _module(side)
    assert hasattr(m, name), f"airbench_{side} has no {name}"
    assert check_against_upstream(getattr(m, name), name) == []


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_both_sides_agree_beyond_upstream_names(name):
    """The two sides' parameters also agree where upstream's end (train9x's extras pass through
    **kw on both sides)."""
    j, t = _module("jax"), _module("torch")
    js = [_spelled(p) for p in inspect.signature(getattr(j, name)).parameters.values()]
    ts = [_spelled(p) for p in inspect.signature(getattr(t, name)).parameters.values()]
    n = len(UPSTREAM[name])
    assert js[:n] == ts[:n] == list(UPSTREAM[name])


def test_the_check_catches_drift():
    """The checker itself: a reordered, a renamed, a missing and a required-extra signature
    are each reported."""
    def reordered(train_loader=None, label_smoothing=0.2, epochs=10, learning_rate=1,
                  bias_scaler=1, momentum=1, weight_decay=1, whiten_bias_epochs=1,
                  tta_level=1, make_net=None, run=0, verbose=True):
        pass

    def renamed(net, loader, tta_level=0):
        pass

    def short(widths=None):
        pass

    def required_extra(model, loader, tta_level=0, device=None, *, seed):
        pass

    assert check_against_upstream(reordered, "train94")
    assert check_against_upstream(renamed, "infer")
    assert check_against_upstream(short, "make_net94")
    assert check_against_upstream(required_extra, "evaluate")

    def good(model, loader, tta_level=0, *, batch=None):
        pass
    assert check_against_upstream(good, "evaluate") == []
