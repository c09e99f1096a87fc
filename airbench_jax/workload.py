"""airbench_jax's Workload (airbench_common.workload): the one way the shared CLI and parity
reach the JAX implementation.

Runs go to `run_recipe` / `iter_seeds` (the seeds trained together, vmapped) / `warmup` with
the precision policy resolved once, here. Trainers wrap a `TrainState` (a pytree: `step`
replaces it) built from upstream-named arrays; float64 Trainers (airbench_jax.trainer64) run
every call inside `jax.enable_x64(True)` themselves.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from airbench_common import workload as W
from airbench_common.recipes import get_recipe
from airbench_common.validate import OptionError

from .trainer64 import X64Calls, x64


def _jax():
    import jax
    import jax.numpy as jnp
    return jax, jnp


def net_arrays(net) -> dict[str, np.ndarray]:
    from .convert import to_torch_arrays
    return {k: np.asarray(v) for k, v in to_torch_arrays(net).items()}


def load_net_arrays(net, arrays: Mapping) -> None:
    """Upstream-named arrays into a CifarNet in place; strict: the key set must be the net's (a
    depth-3 state dict does not load into a depth-2 net)."""
    from .convert import from_torch_arrays, to_torch_arrays
    expected = set(to_torch_arrays(net))
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise KeyError(f"state-dict keys differ from the Flax net's: missing {missing}, "
                       f"unexpected {extra}")
    from_torch_arrays(net, dict(arrays))


def _net(recipe, arrays, conv_impl, float64=False):
    """The recipe's Flax net holding `arrays` (float64 variables and activations if asked)."""
    jax, jnp = _jax()
    from flax import nnx
    from .model import make_net
    if not float64:
        net = make_net(recipe, 0, conv_impl=conv_impl)
    else:
        net = make_net(recipe, 0, conv_impl=conv_impl, dtype=jnp.float64)
        nnx.update(net, jax.tree.map(lambda v: v.astype(jnp.float64)
                                     if jnp.issubdtype(v.dtype, jnp.floating) else v,
                                     nnx.state(net)))
    load_net_arrays(net, arrays)   # cast to the variables' dtype
    return net


class JaxTrainer(W.Trainer):
    """A JAX TrainState behind the Trainer interface."""

    def __init__(self, state, policy=None):
        self.state = state
        self.policy = policy   # a Precision to compile under (its matmul precision), or None

    def net(self):
        """The Flax net of the current weights."""
        from .state import net_from_state
        return net_from_state(self.state)

    def arrays(self):
        return net_arrays(self.net())

    def ema_arrays(self):
        if self.state.ema is None:
            return None
        jax, _ = _jax()
        from flax import nnx
        p, r = self.state.ema
        r = jax.tree.map(lambda new, old: old if new is None else new, r, self.state.rest,
                         is_leaf=lambda v: v is None)
        return net_arrays(nnx.merge(self.state.graphdef, p, r))

    def with_arrays(self, arrays, step: int = 0, ema_arrays=None) -> "JaxTrainer":
        """A Trainer of the same static parts (so the jitted step is reused) holding `arrays`,
        fresh optimizer state with counters at `step`."""
        _, jnp = _jax()
        from .model import split_net
        from .probe import set_counts
        from .state import float_only
        t = self.state
        net = self.net()
        load_net_arrays(net, arrays)
        _, params, rest = split_net(net)
        kw = dict(step=jnp.asarray(step, t.step.dtype), params=params, rest=rest,
                  opt_state=set_counts(t.tx.init(params), step))
        if t.ema is not None:
            ema_net = self.net()
            load_net_arrays(ema_net, arrays if ema_arrays is None else ema_arrays)
            _, p2, r2 = split_net(ema_net)
            kw["ema"] = (p2, float_only(r2))
        return JaxTrainer(t.replace(**kw))

    def load_arrays(self, arrays):
        self.state = self.with_arrays(arrays, int(self.state.step)).state

    def load_proxy_arrays(self, arrays) -> None:
        """The proxy net's weights, with a fresh proxy optimizer state."""
        from flax import nnx
        from .model import split_net
        s = self.state
        pnet = nnx.merge(s.proxy_graphdef, s.proxy_params, s.proxy_rest)
        load_net_arrays(pnet, arrays)
        _, pp, pr = split_net(pnet)
        self.state = s.replace(proxy_params=pp, proxy_rest=pr, proxy_opt_state=s.proxy_tx.init(pp))

    def forward(self, x, y, train):
        jax, jnp = _jax()
        from flax import nnx
        from .model import split_net
        from .state import per_example_loss
        graphdef, params, rest = split_net(self.net())
        r = self.state.recipe

        def f(p, rst):
            net = nnx.merge(graphdef, p, rst)
            logits = net(jnp.asarray(x), train=train)
            loss = per_example_loss(logits, jnp.asarray(y), r.label_smoothing).sum()
            return loss, (logits, split_net(net)[2])

        grads = {}
        if train:
            (loss, (logits, new_rest)), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params,
                                                                                      rest)
            grads = net_arrays(nnx.merge(graphdef, g, jax.tree.map(jnp.zeros_like, rest)))
            # the BatchNorm scale is frozen at 1 (not a parameter): no gradient to report
            grads = {k: v for k, v in grads.items() if not (k.endswith(".weight") and "norm" in k)}
        else:
            loss, (logits, new_rest) = jax.jit(f)(params, rest)
        after = net_arrays(nnx.merge(graphdef, params, new_rest))
        return dict(logits=np.asarray(logits), loss=float(loss), grads=grads, after=after)

    def step(self, x, y):
        _, jnp = _jax()
        from .state import train_step
        self.state, loss = train_step(self.state, jnp.asarray(x), jnp.asarray(y))
        return float(loss)

    def stepper(self, x, y, scan_steps: int = 0):
        """One jitted `train_step` per step (or, with scan_steps=k, k steps as one `lax.scan`
        program per step, as inside an epoch), compiled ahead (under the trainer's policy's
        matmul precision); `run(n)` waits for the state once, after its n calls."""
        import contextlib
        jax, jnp = _jax()
        from .loop import train_steps
        from .precision import matmul_context
        from .state import train_step
        x, yj = jnp.asarray(x), jnp.asarray(np.asarray(y).astype(np.int32))
        with matmul_context(self.policy) if self.policy else contextlib.nullcontext():
            t = time.perf_counter()
            if scan_steps:
                program = train_steps.lower(self.state, x, yj, scan_steps).compile()
            else:
                program = train_step.lower(self.state, x, yj).compile()
            compile_seconds = time.perf_counter() - t

        def run(n: int = 1):
            for _ in range(n):
                self.state, _ = program(self.state, x, yj)
            jax.block_until_ready(self.state)
        return run, compile_seconds

    def logits(self, x, tta_level):
        from .evaluation import infer_arrays
        s = self.state
        return np.asarray(infer_arrays(s.graphdef, s.params, s.rest, x, tta_level,
                                       batch=len(x)))


    def proxy_arrays(self):
        from flax import nnx
        s = self.state
        if s.proxy_graphdef is None:
            return None
        return net_arrays(nnx.merge(s.proxy_graphdef, s.proxy_params, s.proxy_rest))

    def dtypes(self, x):
        _, jnp = _jax()
        from .probe import ns_dtype, stored_dtypes
        s = self.state
        return dict(stored=stored_dtypes(s), activations=str(self.net()(jnp.asarray(x[:2])).dtype),
                    newton_schulz=ns_dtype(s) if s.recipe.optimizer == "muon" else None)


class JaxTrainer64(X64Calls, JaxTrainer):
    """A JaxTrainer whose state is float64 (weights, activations, optimizer, Newton-Schulz),
    every call inside JAX's float64 mode (airbench_jax.trainer64)."""


class JaxWorkload(W.Workload):
    name = "jax"
    package = "airbench_jax"
    extra_options = ("conv_impl", "group_size")
    description = "airbench CIFAR-10 speed-run recipes in JAX/Flax/optax."
    device_aliases = {"cuda": "gpu"}

    def add_cli_options(self, group):
        from .conv import IMPLS
        group.add_argument("--conv-impl", default="auto", choices=IMPLS,
                           help="convolution lowering: oneDNN custom calls (CPU, float32), XLA's "
                                "native conv, or im2col matmuls (default: auto: oneDNN on the CPU "
                                "when installed, else im2col; native elsewhere)")
        group.add_argument("--group-size", type=int, default=None, metavar="K",
                           help="with --seeds: train K seeds at a time as one vmapped program "
                                "(default: as many as fit in half the device's memory)")

    def cli_extra(self, args):
        if args.group_size is not None and args.seeds is None:
            raise OptionError("--group-size needs --seeds (the seeds trained together)")
        return dict(conv_impl=args.conv_impl, group_size=args.group_size)

    def devices(self):
        from .prepare import available_devices
        return available_devices()

    def check(self, options):
        from airbench_common.validate import check_choice, integer
        from .conv import IMPLS
        options = super().check(options)
        if "conv_impl" in options.extra:
            check_choice("conv_impl", options.extra["conv_impl"], IMPLS)
        if options.extra.get("group_size") is not None:
            integer("group_size", options.extra["group_size"], low=1)
        self.precision(options)
        return options

    def precision(self, options):
        from .precision import resolve
        from .prepare import resolve_device
        return resolve(options.precision, device=resolve_device(options.device),
                       **options.parts)

    def _kwargs(self, options) -> dict:
        o = self.check(options)
        return dict(overrides=dict(o.overrides), data_dir=o.data_dir, train_data=o.train_data,
                    test_data=o.test_data, device=o.device, precision=self.precision(o),
                    conv_impl=o.extra.get("conv_impl", "auto"),
                    eval_every_epoch=o.eval_every_epoch, predictions=o.predictions,
                    verbose=o.verbose, log=o.log, data=o.data)

    def run(self, options, seed):
        from .run import run_recipe
        return run_recipe(options.recipe, seed, run_label=options.run_label,
                          **self._kwargs(options))

    def run_seeds(self, options, seeds):
        """The seeds trained together as one vmapped program, `group_size` at a time (None: as
        many as fit in half the device's memory)."""
        from .seeds import iter_seeds
        yield from iter_seeds(options.recipe, list(seeds),
                              group_size=options.extra.get("group_size"),
                              **self._kwargs(options))

    def warmup(self, options):
        from .run import warmup
        kw = self._kwargs(options)
        for k in ("data_dir", "predictions", "verbose", "log", "data"):
            kw.pop(k)
        warmup(options.recipe, **kw)

    def from_arrays(self, recipe, n_train, arrays, *, precision="float32", ns_dtype="float32",
                    step=0, ema_arrays=None, proxy_arrays=None, template=None, **extra):
        _, jnp = _jax()
        from .state import init_train_state
        conv_impl = self.trainer_option(extra, "conv_impl", "matmul")
        r = get_recipe(recipe)
        if not isinstance(precision, str):
            t = JaxTrainer(_policy_state(r, n_train, arrays, precision, conv_impl))
        elif template is not None:
            t = template.with_arrays(arrays, step, ema_arrays)
        else:
            t = (_trainer64(r, n_train, arrays, conv_impl) if precision == "float64" else
                 JaxTrainer(init_train_state(r, n_train, 0, net=_net(r, arrays, conv_impl),
                                             ns_dtype=getattr(jnp, ns_dtype),
                                             conv_impl=conv_impl)))
            if step or ema_arrays is not None:
                t = t.with_arrays(arrays, step, ema_arrays)
        if proxy_arrays is not None and t.state.proxy_graphdef is not None:
            t.load_proxy_arrays(proxy_arrays)
        return t

    def from_init(self, recipe, n_train, images, seed=0, *, device=None, precision=None,
                  whiten_all=False, **extra):
        """`device`: JAX runs on its default backend, so only None is taken."""
        import contextlib
        jax, jnp = _jax()
        from .precision import matmul_context
        from .state import init_train_state
        conv_impl = self.trainer_option(extra, "conv_impl", "auto")
        if device is not None:
            raise OptionError("the jax workload's trainers run on JAX's default backend; "
                              "give no device")
        x = jnp.asarray(images if whiten_all else images[:64])
        with matmul_context(precision) if precision else contextlib.nullcontext():
            state = init_train_state(get_recipe(recipe), n_train, jax.random.PRNGKey(seed),
                                     whiten_images=x, precision=precision, conv_impl=conv_impl)
        return JaxTrainer(state, precision)

    def whitening_filters(self, images, kernel_size, eps):
        from .model import whitening_kernel
        return np.asarray(whitening_kernel(images, kernel_size, eps)).transpose(3, 2, 0, 1)


    # -- the optimizer's pieces on their own
    def newton_schulz(self, g, steps, eps, dtype):
        _, jnp = _jax()
        from .muon import newton_schulz
        return np.asarray(newton_schulz(jnp.asarray(g), steps, eps,
                                        getattr(jnp, dtype)).astype(jnp.float32))

    def muon_step(self, param, grad, lr, momentum):
        _, jnp = _jax()
        import optax
        from .muon import muon
        p, g = jnp.asarray(param.transpose(2, 3, 1, 0)), jnp.asarray(grad.transpose(2, 3, 1, 0))
        tx = muon(lr, momentum)
        u, _ = tx.update(g, tx.init(p), p)
        return np.asarray(optax.apply_updates(p, u)).transpose(3, 2, 0, 1)

    def learning_rates(self, recipe, n_train):
        from .probe import learning_rates
        return learning_rates(get_recipe(recipe), n_train)

    # -- the backend
    def conv_impls(self):
        jax, _ = _jax()
        from . import onednn
        from .conv import IMPLS
        st = onednn.status()
        why = {"onednn": ("runs on the CPU only" if jax.default_backend() != "cpu" else
                          "" if st.available else st.reason)}
        return {impl: why.get(impl, "") for impl in IMPLS if impl != "auto"}

    def conv_impl(self, name="auto"):
        from .conv import resolve_impl
        return resolve_impl(name)

    def compile_clock(self):
        from .compile_clock import compile_clock
        return compile_clock()

    def set_precision(self, policy):
        jax, _ = _jax()
        jax.config.update("jax_default_matmul_precision",
                          "tensorfloat32" if policy.tf32 == "on" else "highest")

    def backend_info(self, device=None, conv_impl=None, recipe=None, batch=None):
        from .probe import backend_info
        if device is not None:
            raise OptionError("the jax workload runs on JAX's default backend; give no device")
        return backend_info(conv_impl, recipe, batch)


def _trainer64(r, n_train, arrays, conv_impl):
    """The float64 reference trainer (airbench_jax.trainer64: built and used in x64 mode)."""
    _, jnp = _jax()
    from .state import init_train_state
    with x64():
        return JaxTrainer64(init_train_state(r, n_train, 0, net=_net(r, arrays, conv_impl, True),
                                             ns_dtype=jnp.float64, conv_impl=conv_impl))


def _policy_state(r, n_train, arrays, policy, conv_impl):
    """A TrainState built in the Precision `policy` holding `arrays` (cast to its dtypes)."""
    from .model import make_net
    from .state import init_train_state
    net = make_net(r, 0, conv_impl=conv_impl, dtype=policy.compute, param_dtype=policy.params,
                   tf32=policy.tf32)
    load_net_arrays(net, arrays)
    return init_train_state(r, n_train, 0, net=net, precision=policy, conv_impl=conv_impl)


WORKLOAD = JaxWorkload()
