"""airbench_torch's Workload (airbench_common.workload): the one way the shared CLI and parity
reach the PyTorch implementation.

Runs go to `run_recipe` / `warmup` with the precision policy resolved once, here (PyTorch trains
several seeds one after another: the default `run_seeds`). Trainers wrap a `TrainState` on the
CPU (the shared-weight checks compare against float64 there); inputs arrive NHWC and are moved to
NCHW (and to the loader's memory format) here.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torch.nn.functional as F

from airbench_common import workload as W
from airbench_common.recipes import get_recipe
from airbench_common.schedules import param_groups
from airbench_common.validate import OptionError

from . import convert
from .device import (NS_DTYPES, apply_precision, apply_tf32, available_devices, compile_clock,
                     dtype_name, resolve_device, resolve_precision, synchronize,
                     to_memory_format, uses_channels_last)
from .net import net_for_recipe, whitening_filters
from .evaluation import infer_images
from .train import make_train_state, run_recipe, train_step, warmup
from .optim import Lookahead, Muon, newton_schulz, set_learning_rates


def nchw(x_nhwc) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc).transpose(0, 3, 1, 2)))


class TorchTrainer(W.Trainer):
    """An airbench_torch TrainState behind the Trainer interface."""

    def __init__(self, state, memory_format=None):
        self.state = state
        self._format = memory_format or (lambda t: t)   # the loader's memory format

    def _images(self, x) -> torch.Tensor:
        """NHWC images as NCHW, widened to float64 for a float64 net."""
        xt = nchw(x)
        return xt.double() if next(self.state.net.parameters()).dtype == torch.float64 else xt

    def _inputs(self, x, y):
        return (self._format(self._images(x)),
                torch.from_numpy(np.asarray(y).astype(np.int64)))

    def arrays(self):
        return convert.to_arrays(self.state.net)

    def ema_arrays(self):
        look = self.state.lookahead
        if look is None:
            return None
        return {**self.arrays(), **{k: v.detach().cpu().numpy().copy() for k, v in look.ema.items()}}

    def load_arrays(self, arrays):
        convert.load_arrays(arrays, self.state.net)

    def forward(self, x, y, train):
        net = copy.deepcopy(self.state.net)
        net.train(train)
        xt, yt = self._inputs(x, y)
        out = net(xt)
        loss = F.cross_entropy(out if out.dtype == torch.float64 else out.float(), yt,
                               label_smoothing=self.state.recipe.label_smoothing, reduction="sum")
        grads = {}
        if train:
            loss.backward()
            grads = {k: p.grad.detach().numpy().copy() for k, p in net.named_parameters()
                     if p.requires_grad}
        return dict(logits=out.detach().numpy(), loss=float(loss.detach()), grads=grads,
                    after=convert.to_arrays(net))

    def step(self, x, y):
        return float(train_step(self.state, *self._inputs(x, y)))

    def stepper(self, x, y):
        """`run(n)`: n train steps that do not wait (check=False, as a run's loop), then one
        wait for the device; the inputs are on the device in the net's dtype beforehand."""
        st = self.state
        xt, yt = self._inputs(x, y)
        xt, yt = xt.to(st.device, st.net[0].weight.dtype), yt.to(st.device)

        def run(n: int = 1):
            for _ in range(n):
                train_step(st, xt, yt, check=False)
            synchronize(st.device)
        return run, None

    def logits(self, x, tta_level):
        return infer_images(self.state.net, self._images(x), tta_level)[1].numpy()

    def proxy_arrays(self):
        return None if self.state.proxy is None else convert.to_arrays(self.state.proxy.net)

    def dtypes(self, x):
        net = copy.deepcopy(self.state.net).eval()
        with torch.no_grad():
            act = dtype_name(net(nchw(x[:2])).dtype)
        ns = next((dtype_name(o.param_groups[0]["ns_dtype"]) for o in self.state.optimizers
                   if isinstance(o, Muon)), None)
        return dict(stored={k: dtype_name(v.dtype) for k, v in self.state.net.state_dict().items()
                            if v.is_floating_point()}, activations=act, newton_schulz=ns)


class TorchWorkload(W.Workload):
    name = "torch"
    package = "airbench_torch"
    extra_options = ("compile", "channels_last", "progress")
    description = ("airbench CIFAR-10 speed-run recipes in PyTorch (the reference "
                   "implementation).")

    def add_cli_options(self, group):
        group.add_argument("--compile", action="store_true", help="torch.compile the net")
        group.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                           default=None,
                           help="channels_last memory format for images and convs (default: "
                                "the device policy, see airbench_torch/device.py)")
        group.add_argument("--no-progress", action="store_true",
                           help="no progress bar within epochs (--quiet implies it)")

    def cli_extra(self, args):
        return dict(compile=args.compile, channels_last=args.channels_last,
                    progress=not (args.quiet or args.no_progress))

    def devices(self):
        return available_devices()

    def check(self, options):
        options = super().check(options)
        self.precision(options)
        return options

    def precision(self, options):
        return resolve_precision(options.precision, options.device, **options.parts)

    def _kwargs(self, options) -> dict:
        o = self.check(options)
        x = o.extra
        return dict(overrides=dict(o.overrides), device=o.device, precision=self.precision(o),
                    compile=bool(x.get("compile", False)), channels_last=x.get("channels_last"))

    def run(self, options, seed):
        return run_recipe(options.recipe, seed, data_dir=options.data_dir,
                          train_data=options.train_data, test_data=options.test_data,
                          verbose=options.verbose, eval_every_epoch=options.eval_every_epoch,
                          log=options.log, run_label=options.run_label,
                          progress=bool(options.extra.get("progress", False)),
                          predictions=options.predictions, data=options.data,
                          **self._kwargs(options))

    def warmup(self, options):
        warmup(options.recipe, test_data=options.test_data, **self._kwargs(options))

    def from_arrays(self, recipe, n_train, arrays, *, precision="float32", ns_dtype="float32",
                    step=0, ema_arrays=None, proxy_arrays=None, template=None, **extra):
        if extra:
            raise OptionError(f"the torch workload's trainers take no {', '.join(sorted(extra))}")
        r = get_recipe(recipe)
        net = net_for_recipe(r)
        convert.load_arrays(arrays, net)
        if isinstance(precision, str):
            ns = NS_DTYPES[ns_dtype]
            if precision == "float64":
                net, ns = net.double(), torch.float64
            st = make_train_state(r, n_train, None, net=net, ns_dtype=ns, device="cpu")
        else:   # a Precision: the state built in that policy
            net = apply_precision(net, torch.device("cpu"), precision=precision)
            st = make_train_state(r, n_train, None, net=net, precision=precision, device="cpu")
        st.step = step
        if ema_arrays is not None and st.lookahead is not None:
            ema = copy.deepcopy(net)
            convert.load_arrays(ema_arrays, ema)
            st.lookahead = Lookahead(ema)
        if proxy_arrays is not None and st.proxy is not None:
            convert.load_arrays(proxy_arrays, st.proxy.net)
        return TorchTrainer(st)

    def from_init(self, recipe, n_train, images, seed=0, *, device=None, precision=None,
                  whiten_all=False, **extra):
        dev = resolve_device(device or "cpu")
        cl = uses_channels_last(dev, self.trainer_option(extra, "channels_last", None))
        fmt = lambda t: to_memory_format(t, cl)  # noqa: E731
        x = fmt(nchw(images)).to(dev)
        st = make_train_state(get_recipe(recipe), n_train, x if whiten_all else x[:64],
                              seed=seed, device=dev, channels_last=cl, precision=precision)
        return TorchTrainer(st, fmt)

    def whitening_filters(self, images, kernel_size, eps):
        return whitening_filters(nchw(images), kernel_size, eps).numpy()

    # -- the optimizer's pieces on their own
    def newton_schulz(self, g, steps, eps, dtype):
        return newton_schulz(torch.from_numpy(g), steps, eps, NS_DTYPES[dtype]).float().numpy()

    def muon_step(self, param, grad, lr, momentum):
        p = torch.nn.Parameter(torch.from_numpy(np.array(param)))
        p.grad = torch.from_numpy(np.asarray(grad))
        Muon([p], lr=lr, momentum=momentum).step()
        return p.detach().numpy()

    def learning_rates(self, recipe, n_train):
        """What train_step sets on each param group (set_learning_rates) at every step."""
        r = get_recipe(recipe)
        st = make_train_state(r, n_train, None, net=net_for_recipe(r), device="cpu")
        total = r.total_steps(n_train)
        out = {g.name: np.zeros(total) for g in param_groups(r, n_train)}
        for t in range(total):
            set_learning_rates(st.optimizers, st.schedules, t)
            for opt in st.optimizers:
                for pg in opt.param_groups:
                    out[pg["spec"].name][t] = pg["lr"]
        return out

    # -- the backend
    def compile_clock(self):
        return compile_clock()

    def set_precision(self, policy):
        apply_tf32(policy)

    def backend_info(self, device=None, conv_impl=None, recipe=None, batch=None):
        dev = resolve_device(device)
        return dict(device=str(dev), channels_last=uses_channels_last(dev))


WORKLOAD = TorchWorkload()
