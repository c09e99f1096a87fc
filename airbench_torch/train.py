"""Train state, one train step, the epoch loop, run_recipe and warmup (evaluation with TTA:
airbench_torch.evaluation)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from airbench_common import outcome
from airbench_common import validate as V
from airbench_common import (LOOKAHEAD_EVERY, Recipe, get_recipe, lookahead_decays, lr_schedules,
                             param_groups)
from airbench_common.data import DatasetError
from airbench_common.env import device_fields, package_versions
from airbench_common.table import Table
from airbench_common.timing import Stopwatch
from airbench_common.records import data_identity, epoch_row, run_record

from .device import (apply_precision, apply_tf32, compile_clock, dtype_name, resolve_device, resolve_precision,
                     synchronize, tf32_state, torch_dtype, uses_channels_last)
from .evaluation import evaluate, infer, infer_both
from .loader import CifarLoader
from .net import CifarNet, init_whitening, net_for_recipe
from .optim import Lookahead, build_optimizers, set_learning_rates


@dataclass
class ProxyState:
    """airbench96_faster's small proxy net that picks the highest-loss examples of each batch."""
    net: CifarNet
    optimizers: list
    keep: int
    train_every: int


@dataclass
class TrainState:
    recipe: Recipe
    net: CifarNet
    optimizers: list
    groups: list
    schedules: dict
    lookahead: Lookahead | None
    lookahead_decays: np.ndarray | None
    step: int
    total_steps: int
    n_train: int
    device: torch.device
    ns_dtype: torch.dtype
    proxy: ProxyState | None = None
    precision: Any = None                  # airbench_common.precision.Precision of the run
    model: Callable | None = None          # the callable used for the forward (compiled or net)
    whiten_seconds: float = 0.0
    last: dict = field(default_factory=dict)  # outputs/labels/loss of the last step (for logs)

    @property
    def whiten_bias_frozen_after(self) -> int | None:
        for g in self.groups:
            if g.name == "whiten_bias":
                return g.frozen_after
        return None


def _as_recipe(recipe, overrides=None) -> Recipe:
    return get_recipe(recipe, **(overrides or {}))


def make_train_state(recipe, n_train: int, whiten_inputs: torch.Tensor | None, seed: int = 0,
                     device=None, net: nn.Module | None = None, ns_dtype=None, *,
                     compile: bool = False, whiten_given_net: bool = False,
                     channels_last: bool | None = None, precision=None,
                     dtype=None) -> TrainState:
    """A fresh training state. `whiten_inputs`: normalized NCHW images (the first
    recipe.whiten_images training images) for the whitening init. With `net` given its weights are
    used as they are (no re-init, no whitening init unless whiten_given_net; the net's dtypes
    are its own). precision: a policy name or Precision (None: the device's default), its parts
    overridden by dtype (weights and activations) and ns_dtype. Inputs of train_step are cast
    to the net's dtype."""
    recipe = _as_recipe(recipe)
    dev = resolve_device(device)
    if net is not None and precision is None and dtype is None:
        dtype = next(net.parameters()).dtype  # a given net keeps its dtype; the proxy follows it
    pol = resolve_precision(precision, dev, dtype=dtype, ns_dtype=ns_dtype)
    ns = torch_dtype(pol.newton_schulz)
    torch.manual_seed(seed)
    t_whiten = 0.0
    if net is None:
        net = apply_precision(net_for_recipe(recipe), dev, channels_last, pol)
        do_whiten = True
    else:
        do_whiten = whiten_given_net
    if do_whiten:
        if whiten_inputs is None:
            raise ValueError("make_train_state needs whiten_inputs to initialize the whitening layer")
        synchronize(dev)
        t0 = time.perf_counter()
        init_whitening(net, whiten_inputs.to(dev), recipe.whiten_eps)
        synchronize(dev)
        t_whiten = time.perf_counter() - t0

    groups = param_groups(recipe, n_train)
    schedules = lr_schedules(recipe, n_train)
    total = recipe.total_steps(n_train)
    opts = build_optimizers(net, groups, recipe, ns)
    look = Lookahead(net) if recipe.lookahead else None
    decays = lookahead_decays(recipe, n_train) if recipe.lookahead else None

    proxy = None
    if recipe.filter_keep:
        pnet = apply_precision(net_for_recipe(recipe, widths=recipe.proxy_widths,
                                              depth=recipe.proxy_depth), dev, channels_last, pol)
        if whiten_inputs is not None:
            t0 = time.perf_counter()
            init_whitening(pnet, whiten_inputs.to(dev), recipe.whiten_eps)
            synchronize(dev)
            t_whiten += time.perf_counter() - t0
        # upstream freezes the proxy's whitening bias throughout: frozen_after=0 in its groups
        proxy = ProxyState(pnet, build_optimizers(pnet, param_groups(recipe, n_train, proxy=True),
                                                  recipe, ns),
                           recipe.filter_keep, recipe.proxy_train_every)
    model = torch.compile(net) if compile else net
    return TrainState(recipe=recipe, net=net, optimizers=opts, groups=groups, schedules=schedules,
                      lookahead=look, lookahead_decays=decays, step=0, total_steps=total,
                      n_train=n_train, device=dev, ns_dtype=ns, proxy=proxy, model=model,
                      whiten_seconds=t_whiten, precision=pol)


def _loss_per_example(outputs, labels, smoothing):
    return F.cross_entropy(outputs.float(), labels, label_smoothing=smoothing, reduction="none")


def _proxy_select(state: TrainState, inputs, labels):
    """Score the batch with the proxy (training it on every k-th step) and return the mask of the
    `keep` highest-loss examples, kept in batch order."""
    px, r = state.proxy, state.recipe
    px.net.train()
    train_now = state.step % px.train_every == 0
    with torch.set_grad_enabled(train_now):
        losses = _loss_per_example(px.net(inputs), labels, r.label_smoothing)
    mask = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
    mask[losses.detach().argsort()[-px.keep:]] = True
    if train_now:
        set_learning_rates(px.optimizers, state.schedules, state.step)
        (losses * mask.to(losses.dtype)).sum().backward()
        for opt in px.optimizers:
            opt.step()
        px.net.zero_grad(set_to_none=True)
    return mask


def train_step(state: TrainState, inputs: torch.Tensor, labels: torch.Tensor, *,
               check: bool = True):
    """One optimizer step on an already augmented + normalized NCHW batch; returns the summed
    label-smoothed loss. `check` (default): as a float, and a FloatingPointError on a non-finite
    loss (before any update), which waits for the device every step; check=False: as a tensor,
    without waiting (a run's loop checks an epoch's losses at its end, as upstream never
    synchronises inside an epoch)."""
    r, net, step = state.recipe, state.net, state.step
    if step >= state.total_steps:
        raise RuntimeError(f"training already finished ({state.total_steps} steps)")
    inputs = inputs.to(state.device, state.net[0].weight.dtype)  # the net's compute dtype
    labels = labels.to(state.device)
    if state.proxy is not None:
        mask = _proxy_select(state, inputs, labels)
        inputs, labels = inputs[mask], labels[mask]

    set_learning_rates(state.optimizers, state.schedules, step)

    net.train()
    outputs = (state.model or net)(inputs)
    loss = _loss_per_example(outputs, labels, r.label_smoothing).sum()
    value = loss.detach()
    if check:
        value = float(value)
        if not math.isfinite(value):
            for opt in state.optimizers:
                opt.zero_grad(set_to_none=True)
            raise FloatingPointError(
                f"non-finite loss {value} at step {step} of {r.name}; try a lower lr or check "
                "the inputs are normalized")
    loss.backward()
    for opt in state.optimizers:
        opt.step()
    net.zero_grad(set_to_none=True)
    state.step = step = step + 1
    if state.lookahead is not None:
        if step % LOOKAHEAD_EVERY == 0:
            state.lookahead.update(net, float(state.lookahead_decays[step]))
        if step == state.total_steps:
            state.lookahead.update(net, 1.0)
    state.last = dict(outputs=outputs.detach(), labels=labels, loss=loss.detach())
    return value


# ---------------------------------------------------------------------- the loop
def stopwatch(state: TrainState) -> Stopwatch:
    """The run's Stopwatch (airbench_common.timing), holding the whitening time already spent."""
    watch = Stopwatch(lambda: synchronize(state.device), compile_clock)
    watch.seconds["whiten"] = state.whiten_seconds
    return watch


def fit(state: TrainState, train_loader: CifarLoader, test_loader: CifarLoader | None = None, *,
        eval_every_epoch=True, table: Table | None = None, run_label=None, progress=False,
        watch: Stopwatch | None = None) -> dict:
    """Train to state.total_steps over the loader's epochs. Returns timing and per-epoch logs
    (airbench_common.records.epoch_row), and `diverged` (the reason, or None): an epoch whose
    losses are not all finite ends the run there, its row kept, as on the JAX side. Per-epoch
    evaluation is excluded from the timing (`watch`'s epochs part)."""
    spe = len(train_loader)
    n_epochs = math.ceil(state.total_steps / spe)
    watch = watch or stopwatch(state)
    per_epoch, diverged = [], None
    for epoch in range(n_epochs):
        before = watch.seconds["epochs"]
        losses = []
        with watch.part("epochs"):
            batches = train_loader
            if progress:
                from tqdm import tqdm
                batches = tqdm(train_loader, total=spe, leave=False, desc=f"epoch {epoch}")
            for inputs, labels in batches:
                losses.append(train_step(state, inputs, labels, check=False))
                if state.step >= state.total_steps:
                    break
        seconds = watch.seconds["epochs"] - before
        train_seconds = watch.seconds["whiten"] + watch.seconds["epochs"]
        last = state.last
        rec = epoch_row(epoch, loss_sum=last["loss"], seconds=seconds, n=len(last["labels"]),
                        correct=(last["outputs"].argmax(1) == last["labels"]).sum().item())
        per_epoch.append(rec)
        if not bool(torch.isfinite(torch.stack(losses)).all()):
            diverged = f"non-finite training loss in epoch {epoch}"
            break
        if eval_every_epoch and test_loader is not None:
            rec["val_acc"] = evaluate(state.net, test_loader, 0)
        if table is not None:
            table.row(run=run_label if epoch == 0 else None, epoch=epoch,
                      train_loss=rec["train_loss"], train_acc=rec["train_acc"],
                      val_acc=rec["val_acc"], time_seconds=train_seconds)
        if state.step >= state.total_steps:
            break
    return dict(per_epoch=per_epoch, diverged=diverged,
                train_seconds=watch.seconds["whiten"] + watch.seconds["epochs"])


def _versions():
    v = package_versions("torch")
    return {k: v[k] for k in ("torch", "numpy", "python")}


def run_recipe(recipe, seed: int, *, overrides: dict | None = None, data_dir=None,
               train_data=None, test_data=None, device=None, ns_dtype=None, verbose=False,
               eval_every_epoch=True, log=print, compile=False, run_label=None,
               progress=False, channels_last: bool | None = None,
               predictions: bool = False, precision=None, dtype=None, tf32=None,
               data: dict | None = None) -> dict:
    """One complete run of a recipe; returns a run record (airbench_common.records schema).
    A non-finite loss gives a record with status 'diverged', acc None and an `error` string; a
    collapsed network (every test prediction the same class, see airbench_common.outcome) status
    'diverged' with its accuracies and the reason. The record's in-memory key `_predictions`
    holds the per-example TTA predictions (uint8). precision: the policy (None: the device's
    default), parts overridden by dtype, ns_dtype, tf32; it sets PyTorch's process-wide TF32
    switches and is recorded as `precision` (with the switches as they were, `flags.tf32`).
    `data`: the record's data identity as the caller knows it (None: worked out here)."""
    keep_predictions = predictions
    overrides = dict(overrides or {})
    r = _as_recipe(recipe, overrides)
    seed = V.check_seed(seed)
    V.check_data_dir(data_dir, "data_dir")
    # arrays given get the checks a dataset file gets (airbench_common.data.check_arrays)
    train_data = None if train_data is None else V.check_data_pair(train_data, "train_data")
    test_data = None if test_data is None else V.check_data_pair(test_data, "test_data")
    dev = resolve_device(device)
    pol = resolve_precision(precision, dev, dtype=dtype, ns_dtype=ns_dtype, tf32=tf32)
    apply_tf32(pol)
    ns, cdt = torch_dtype(pol.newton_schulz), torch_dtype(pol.compute)
    cl = uses_channels_last(dev, channels_last)
    torch.manual_seed(seed)
    t_setup = time.perf_counter()  # set-up, not upstream's timed work: timed apart
    train_loader = CifarLoader(data_dir, train=True, batch_size=r.batch_size, aug=r.loader_aug(),
                               altflip=r.altflip, device=dev, seed=seed, data=train_data,
                               channels_last=cl)
    test_loader = CifarLoader(data_dir, train=False, batch_size=outcome.EVAL_BATCH_ACCELERATOR,
                              device=dev, data=test_data, channels_last=cl)
    for loader in (train_loader, test_loader):  # images in the policy's compute dtype
        if loader.images.dtype != cdt:
            loader.images = loader.images.to(cdt)
    n_train, n_test = len(train_loader.images), len(test_loader.images)
    r.total_steps(n_train)  # a RecipeError (one line) for fewer training images than a batch
    if n_test < 1:
        raise DatasetError("the test set has 0 images; give at least one test image")
    whiten_inputs = train_loader.normalize(train_loader.images[:r.whiten_images])
    table = Table(log) if verbose else None
    if table is not None and run_label in (None, 0):
        table.head()
    device, device_name = device_fields(
        dev.type, dev.index if dev.index is not None else (
            torch.cuda.current_device() if dev.type == "cuda" else None),
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
    common = dict(recipe=r.name, overrides=overrides, seed=seed, framework="torch",
                  versions=_versions(), device=device, device_name=device_name, dtype=pol.compute,
                  flags=dict(compile=bool(compile), channels_last=cl,
                             threads=torch.get_num_threads(), tf32=tf32_state()),
                  tta_level=r.tta_level, ns_dtype=dtype_name(ns), precision=pol.to_dict(),
                  data=dict(data) if data is not None else data_identity(
                      data_dir, n_train, n_test, arrays=train_data is not None),
                  recipe_params=r.to_dict(), eval_compile_seconds=None)
    state = make_train_state(r, n_train, whiten_inputs, seed=seed, device=dev, precision=pol,
                             compile=compile, channels_last=cl)
    synchronize(dev)
    # the set-up minus the whitening (timed as upstream times it, in state.whiten_seconds)
    common["setup_seconds"] = time.perf_counter() - t_setup - state.whiten_seconds
    watch = stopwatch(state)
    out = fit(state, train_loader, test_loader, eval_every_epoch=eval_every_epoch,
              table=table, run_label=run_label if run_label is not None else 0,
              progress=progress, watch=watch)
    setup_seconds = common.pop("setup_seconds")
    if out["diverged"]:
        # eager PyTorch compiles nothing ahead of the run: compile_seconds None (torch.compile's
        # work falls inside the first steps, and timed_compile_seconds says how much)
        return run_record(**common, **watch.fields(setup_seconds=setup_seconds,
                                                   compile_seconds=None, evaluated=False),
                          acc=None, acc_tta=None, steps=state.step, status=outcome.DIVERGED,
                          error=out["diverged"], per_epoch=out["per_epoch"])
    with watch.part("eval"):
        # one pass gives plain and TTA predictions (the plain forward is part of TTA), as in JAX
        plain, tta = infer_both(state.net, test_loader, r.tta_level)
        plain, predictions = (outcome.predicted_classes(v.float().cpu()) for v in (plain, tta))
    labels = test_loader.labels.cpu().numpy()
    acc_tta = float((predictions == labels).mean())
    acc = float((plain == labels).mean())
    error = outcome.collapse_reason(predictions)
    if error is None and not all(bool(torch.isfinite(v).all()) for v in
                                 state.net.state_dict().values() if v.is_floating_point()):
        error = "non-finite weights after training"
    times = watch.fields(setup_seconds=setup_seconds, compile_seconds=None)
    if table is not None:
        table.row(final=True, epoch="eval", tta_val_acc=acc_tta, time_seconds=times["time_seconds"])
    rec = run_record(**common, **times, acc=acc, acc_tta=acc_tta, steps=state.step,
                     status=outcome.DIVERGED if error else outcome.OK,
                     per_epoch=out["per_epoch"], error=error)
    if keep_predictions:  # in memory only ("_" keys), when asked: parity.compare stores them apart
        rec["_predictions"] = predictions
    return rec


def warmup(recipe, seed: int = 0, *, overrides=None, device=None, ns_dtype=None, steps: int = 2,
           compile=False, channels_last: bool | None = None, test_data=None,
           precision=None) -> TrainState:
    """A few train steps on random inputs with random labels (upstream warms up on random labels)
    so that a timed run afterwards excludes first-call overhead (allocator, kernels, compile)."""
    r = _as_recipe(recipe, overrides)
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    n = r.batch_size * max(steps, 1)
    n_whiten = min(r.whiten_images, n)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    r = get_recipe(r, epochs=max(r.epochs, 1.0))
    state = make_train_state(r, n, x[:n_whiten], seed=seed, device=dev, ns_dtype=ns_dtype,
                             compile=compile, channels_last=channels_last, precision=precision)
    for i in range(min(steps, state.total_steps)):
        sl = slice(i * r.batch_size, (i + 1) * r.batch_size)
        train_step(state, x[sl], y[sl])
    if test_data is not None:  # first-call overhead of the evaluation too, at its batch size
        n = min(len(test_data[0]), outcome.eval_batch(dev.type != "cpu"))
        fake = (np.zeros((n, 32, 32, 3), np.uint8), np.zeros(n, np.int64))
        loader = CifarLoader(None, train=False, batch_size=n, device=dev, data=fake,
                             channels_last=uses_channels_last(dev, channels_last))
        infer(state.net, loader, r.tta_level)
    return state
