"""Each framework's side of the parity checks, written once per framework.

`TorchSide` and `JaxSide` implement one small interface (`Side`), each method a thin call into the
implementation's public API (airbench_torch, airbench_jax), so lockstep, bench and the compare
runners write every comparison once (gpu_check's throughput stage calls the packages directly):

* `name`: "torch" or "jax";
* `Side.from_arrays(recipe, n_train, arrays, ...)`: a train state holding upstream-named arrays
  (parity.convert's names, the PyTorch state-dict's); `Side.from_init(recipe, n_train, images)`:
  the package's own initialisation (whitening from the normalized NHWC `images`);
* `arrays()` / `load_arrays(arrays)`: the net's weights out / in, by upstream names;
* `forward(x, y, train)`: logits, summed loss, gradients and the weights after the pass;
* `step(x, y)`: one optimizer step (schedules included), returns the loss;
* `stepper(x, y)`: (a zero-argument function running one step, compile seconds or None), for
  timing with compilation kept apart;
* `logits(x, tta_level)`: evaluation logits;
* `run_recipe` / `warmup`: the package's own, for the compare runners.

Inputs are NHWC float32 arrays (normalized images) and int labels on both sides; the torch side
moves them to NCHW. Frameworks are imported lazily, inside the methods: a side of one framework
works without the other installed.

Besides the classes: the reference weights loaded into a torch net and a Flax net, forward/backward
in float32 and float64, and each framework's TrainState built from the same arrays, as used by
parity.numerics."""
from __future__ import annotations

import copy
import sys

import numpy as np

from airbench_common import get_recipe, param_groups
from airbench_common.recipes import Recipe

from .numerics import convert, inputs
from .numerics.batches import synthetic_images, to_nchw
from .numerics.setting import setup_precision  # noqa: F401 - its callers' old address


# ---------------------------------------------------------------------- inputs and weights
def scaled_recipe(name: str, width_scale: float = 1.0, **overrides) -> Recipe:
    r = get_recipe(name, **overrides)
    if width_scale != 1.0:
        w = tuple(max(1, int(round(x * width_scale))) for x in r.widths)
        pw = tuple(max(1, int(round(x * width_scale))) for x in r.proxy_widths)
        r = get_recipe(r, widths=w, proxy_widths=pw)
    return r


def load_images(n: int, data: str = "auto", seed: int = 0):
    """(uint8 NHWC images, labels, source label): the first n CIFAR-10 training images if a dataset
    is configured (data='auto'/'real'), else synthetic ones."""
    if data in ("auto", "real"):
        try:
            from airbench_common.data import dataset_label, load_cifar10
            imgs, labs = load_cifar10("train", download=False)
            return imgs[:n], labs[:n].astype(np.int64), dataset_label()
        except Exception as exc:  # noqa: BLE001 - any missing/corrupt dataset -> synthetic
            if data == "real":
                raise
            print(f"[numerics] no dataset ({type(exc).__name__}); using synthetic images",
                  file=sys.stderr)
    imgs, labs = synthetic_images(n, seed=seed)
    return imgs, labs, "synthetic"


def reference_torch_net(r: Recipe, whiten_nhwc, seed: int = 0):
    """The torch reference net holding parity.inputs.reference_arrays: the same values on every
    machine (whitening from the normalized NHWC images `whiten_nhwc`)."""
    from airbench_torch.net import net_for_recipe
    net = net_for_recipe(r)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    convert.arrays_to_torch(inputs.reference_arrays(r, whiten_nhwc, shapes, seed), net)
    return net


def jax_net(r: Recipe, arrays, impl: str):
    from airbench_jax import make_net
    net = make_net(r, 0, conv_impl=impl)
    convert.jax_from_arrays(net, arrays)
    return net


def jax_net64(r: Recipe, arrays, impl: str):
    """The JAX net in float64 (variables and activations); build and use it inside
    `jax.enable_x64(True)`."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax import make_net
    net = make_net(r, 0, conv_impl=impl, dtype=jnp.float64)
    nnx.update(net, jax.tree.map(lambda v: v.astype(jnp.float64)
                                 if jnp.issubdtype(v.dtype, jnp.floating) else v, nnx.state(net)))
    convert.jax_from_arrays(net, arrays)  # cast to the (now float64) variables' dtype
    return net


def trainable_names(tnet) -> list[str]:
    return [k for k, p in tnet.named_parameters() if p.requires_grad]


def group_names(tnet, r: Recipe, n_train: int) -> dict[str, list[str]]:
    """Torch state-dict names of each param_groups() group (airbench_common.params decides)."""
    from airbench_common.params import group_of
    out = {g.name: [] for g in param_groups(r, n_train)}
    for k, _ in tnet.named_parameters():
        g = group_of(k, r.optimizer)
        if g is not None:
            out[g].append(k)
    return out


# ---------------------------------------------------------------------- forward/backward
def torch_forward(tnet, r, x_nchw, y, train: bool):
    import torch
    import torch.nn.functional as F
    net = copy.deepcopy(tnet)
    net.train(train)
    x = torch.from_numpy(x_nchw)
    if next(net.parameters()).dtype == torch.float64:
        x = x.double()
    out = net(x)
    loss = F.cross_entropy(out if out.dtype == torch.float64 else out.float(),
                           torch.from_numpy(y), label_smoothing=r.label_smoothing,
                           reduction="sum")
    grads = {}
    if train:
        loss.backward()
        grads = {k: p.grad.detach().numpy().copy() for k, p in net.named_parameters()
                 if p.requires_grad}
    return dict(logits=out.detach().numpy(), loss=float(loss.detach()), grads=grads,
                after=convert.torch_to_arrays(net))


def jax_forward(jnet, r, x_nhwc, y, train: bool):
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax.state import per_example_loss
    graphdef, params, rest = nnx.split(jnet, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def f(p, rst):
        net = nnx.merge(graphdef, p, rst)
        logits = net(jnp.asarray(x_nhwc), train=train)
        loss = per_example_loss(logits, jnp.asarray(y), r.label_smoothing).sum()
        _, _, new_rest = nnx.split(net, nnx.Param, ...)
        return loss, (logits, nnx.to_pure_dict(new_rest))

    if train:
        (loss, (logits, new_rest)), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params, rest)
        zero_rest = jax.tree.map(jnp.zeros_like, rest)
        grads = convert.jax_to_arrays(nnx.merge(graphdef, g, zero_rest))
        grads = {k: v for k, v in grads.items() if not k.endswith((".weight",)) or "norm" not in k}
    else:
        loss, (logits, new_rest) = jax.jit(f)(params, rest)
        grads = {}
    after = convert.jax_to_arrays(nnx.merge(graphdef, params, new_rest))
    return dict(logits=np.asarray(logits), loss=float(loss), grads=grads, after=after)


# ---------------------------------------------------------------------- optimizer helpers
def set_counts(tree, t: int):
    """Every `count` field of an optax state tree set to t (momentum buffers untouched)."""
    import jax.numpy as jnp
    if hasattr(tree, "_fields"):
        vals = {f: set_counts(getattr(tree, f), t) for f in tree._fields}
        if "count" in tree._fields:
            vals["count"] = jnp.full_like(tree.count, t)
        return type(tree)(**vals)
    if isinstance(tree, dict):
        return type(tree)({k: set_counts(v, t) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return type(tree)(set_counts(v, t) for v in tree)
    return tree


def torch_state(r, n_train, tnet, ns_dtype="float32", step=0, double=False):
    """airbench_torch's TrainState on a copy of tnet (double=True: the float64 reference, with
    Newton-Schulz in float64 too)."""
    import torch
    from airbench_torch.train import make_train_state
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[ns_dtype]
    net = copy.deepcopy(tnet)
    if double:
        net = net.double()
        dt = torch.float64
    st = make_train_state(r, n_train, None, net=net, ns_dtype=dt, device="cpu")
    st.step = step
    return st


def jax_state(r, n_train, arrays, impl="matmul", ns_dtype="float32"):
    import jax.numpy as jnp
    from airbench_jax import init_train_state
    net = jax_net(r, arrays, impl)
    return init_train_state(r, n_train, 0, net=net, ns_dtype=getattr(jnp, ns_dtype),
                            conv_impl=impl)


def jax_state64(r, n_train, arrays, impl="matmul"):
    """airbench_jax's TrainState in float64 (params, activations, optimizer and Newton-Schulz):
    the JAX side's own float64 reference. Build and step it inside `jax.enable_x64(True)`."""
    import jax.numpy as jnp
    from airbench_jax import init_train_state
    return init_train_state(r, n_train, 0, net=jax_net64(r, arrays, impl), ns_dtype=jnp.float64,
                            conv_impl=impl)


def jax_state_from(template, arrays, step=0, ema_arrays=None):
    """A copy of a JAX TrainState with weights from `arrays`, fresh optimizer state, counters at
    `step` (keeps the template's static parts, so the jitted train_step is reused)."""
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax.state import net_from_state
    net = net_from_state(template)
    convert.jax_from_arrays(net, arrays)
    _, params, rest = nnx.split(net, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    opt = set_counts(template.tx.init(params), step)
    kw = dict(step=jnp.asarray(step, template.step.dtype), params=params, rest=rest, opt_state=opt)
    if template.ema is not None:
        src = arrays if ema_arrays is None else ema_arrays
        net2 = net_from_state(template)
        convert.jax_from_arrays(net2, src)
        _, p2, r2 = nnx.split(net2, nnx.Param, ...)
        p2, r2 = nnx.to_pure_dict(p2), nnx.to_pure_dict(r2)
        ema_rest = jax_float_only(r2)
        kw["ema"] = (p2, ema_rest)
    return template.replace(**kw)


def jax_float_only(tree):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda v: v if jnp.issubdtype(v.dtype, jnp.floating) else None, tree)


def jax_state_arrays(st) -> dict:
    from airbench_jax.state import net_from_state
    return convert.jax_to_arrays(net_from_state(st))


def jax_ema_arrays(st) -> dict:
    import jax
    from flax import nnx
    p, r = st.ema
    r = jax.tree.map(lambda new, old: old if new is None else new, r, st.rest,
                     is_leaf=lambda v: v is None)
    return convert.jax_to_arrays(nnx.merge(st.graphdef, p, r))


# ---------------------------------------------------------------------- one class per framework
class Side:
    """The interface both frameworks implement (see the module docstring); `run_recipe` and
    `warmup` are the package's own functions, looked up lazily."""
    name: str = ""
    module: str = ""

    def arrays(self) -> dict:
        raise NotImplementedError

    def load_arrays(self, arrays: dict) -> None:
        raise NotImplementedError

    def forward(self, x_nhwc, y, train: bool) -> dict:
        raise NotImplementedError

    def step(self, x_nhwc, y) -> float:
        raise NotImplementedError

    def stepper(self, x_nhwc, y):
        raise NotImplementedError

    def logits(self, x_nhwc, tta_level: int) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def package(cls):
        """The implementation's package (imported on first use; ImportError if not installed)."""
        import importlib
        return importlib.import_module(cls.module)

    @classmethod
    def run_recipe(cls, recipe, seed, **kwargs):
        """The package's run_recipe, given only the keyword arguments its signature takes."""
        fn = cls.package().run_recipe
        return fn(recipe, seed, **accepted(fn, kwargs))

    @classmethod
    def warmup(cls, recipe, **kwargs):
        """The package's warmup, given only the arguments its signature takes: each compiles
        (or warms) what a run calls at the shapes of `train_data`/`test_data`, so that no timed
        run compiles (airbench_common.timing)."""
        fn = cls.package().warmup
        return fn(recipe, **accepted(fn, kwargs))


class TorchSide(Side):
    """airbench_torch's TrainState (CPU unless `device` is given)."""
    name, module = "torch", "airbench_torch"

    def __init__(self, state, x_format=None):
        self.state = state
        self._x_format = x_format or (lambda t: t)  # the loader's memory format

    @classmethod
    def from_arrays(cls, r, n_train, arrays, ns_dtype="float32", net=None):
        """`net`: a net of the recipe's shapes to copy (default: a fresh airbench_torch net)."""
        import torch
        from airbench_torch import make_train_state
        from airbench_torch.net import net_for_recipe
        net = net_for_recipe(r) if net is None else copy.deepcopy(net)
        convert.arrays_to_torch(arrays, net)
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[ns_dtype]
        return cls(make_train_state(r, n_train, None, net=net, ns_dtype=dt, device="cpu"))

    @classmethod
    def from_init(cls, r, n_train, images_nhwc, seed=0, channels_last=None):
        """The package's own init; `channels_last` None: the CPU device policy."""
        import torch
        from airbench_torch import make_train_state
        from airbench_torch.device import to_memory_format, uses_channels_last
        cl = uses_channels_last(torch.device("cpu"), channels_last)
        fmt = lambda t: to_memory_format(t, cl)  # noqa: E731
        x = fmt(torch.from_numpy(to_nchw(images_nhwc)))
        return cls(make_train_state(r, n_train, x[:64], seed=seed, device="cpu",
                                    channels_last=cl), fmt)

    def _inputs(self, x_nhwc, y):
        import torch
        return (self._x_format(torch.from_numpy(to_nchw(x_nhwc))),
                torch.from_numpy(np.asarray(y).astype(np.int64)))

    def arrays(self) -> dict:
        return convert.torch_to_arrays(self.state.net)

    def load_arrays(self, arrays: dict) -> None:
        convert.arrays_to_torch(arrays, self.state.net)

    def forward(self, x_nhwc, y, train: bool) -> dict:
        return torch_forward(self.state.net, self.state.recipe, to_nchw(x_nhwc),
                             np.asarray(y).astype(np.int64), train)

    def step(self, x_nhwc, y) -> float:
        from airbench_torch import train_step
        return float(train_step(self.state, *self._inputs(x_nhwc, y)))

    def stepper(self, x_nhwc, y):
        from airbench_torch import train_step
        x, yt = self._inputs(x_nhwc, y)
        return (lambda: train_step(self.state, x, yt)), None

    def logits(self, x_nhwc, tta_level) -> np.ndarray:
        import torch
        from airbench_torch.train import infer_images
        x = torch.from_numpy(to_nchw(x_nhwc))          # already normalized
        return infer_images(self.state.net, x, tta_level)[1].numpy()


class JaxSide(Side):
    """airbench_jax's TrainState (a pytree; `step` replaces it)."""
    name, module = "jax", "airbench_jax"

    def __init__(self, state):
        self.state = state

    @classmethod
    def from_arrays(cls, r, n_train, arrays, ns_dtype="float32", conv_impl="matmul",
                    proxy_arrays=None, template=None):
        """`template`: a JaxSide's state of the same recipe whose static parts (and so compiled
        train_step) are reused; `proxy_arrays`: the proxy net's weights (data-filtering recipes)."""
        import jax.numpy as jnp
        from airbench_jax import init_train_state
        if template is None:
            st = init_train_state(r, n_train, 0, net=jax_net(r, arrays, conv_impl),
                                  ns_dtype=getattr(jnp, ns_dtype), conv_impl=conv_impl)
        else:
            st = jax_state_from(template, arrays, 0)
        side = cls(st)
        if proxy_arrays is not None and st.proxy_graphdef is not None:
            side.load_proxy_arrays(proxy_arrays)
        return side

    @classmethod
    def from_init(cls, r, n_train, images_nhwc, seed=0, conv_impl="auto"):
        import jax
        import jax.numpy as jnp
        from airbench_jax import init_train_state
        return cls(init_train_state(r, n_train, jax.random.PRNGKey(seed),
                                    whiten_images=jnp.asarray(images_nhwc[:64]),
                                    conv_impl=conv_impl))

    def load_proxy_arrays(self, arrays: dict) -> None:
        """The proxy net's weights, with a fresh proxy optimizer state."""
        from flax import nnx
        s = self.state
        pnet = nnx.merge(s.proxy_graphdef, s.proxy_params, s.proxy_rest)
        convert.jax_from_arrays(pnet, arrays)
        _, pp, pr = nnx.split(pnet, nnx.Param, ...)
        pp = nnx.to_pure_dict(pp)
        self.state = s.replace(proxy_params=pp, proxy_rest=nnx.to_pure_dict(pr),
                               proxy_opt_state=s.proxy_tx.init(pp))

    def arrays(self) -> dict:
        return jax_state_arrays(self.state)

    def load_arrays(self, arrays: dict) -> None:
        """Weights from `arrays`, optimizer state fresh at the current step."""
        self.state = jax_state_from(self.state, arrays, int(self.state.step))

    def forward(self, x_nhwc, y, train: bool) -> dict:
        from airbench_jax import net_from_state
        return jax_forward(net_from_state(self.state), self.state.recipe, x_nhwc,
                           np.asarray(y), train)

    def step(self, x_nhwc, y) -> float:
        import jax.numpy as jnp
        from airbench_jax import train_step
        self.state, loss = train_step(self.state, jnp.asarray(x_nhwc), jnp.asarray(y))
        return float(loss)

    def stepper(self, x_nhwc, y, scan_steps: int = 0):
        """One jitted `train_step` per call (or, with scan_steps=k, k steps as one `lax.scan`
        program like `train_epoch`), compiled ahead: (function, compile seconds)."""
        import time
        import jax.numpy as jnp
        from airbench_jax import train_step
        from airbench_jax.loop import train_steps
        x, yj = jnp.asarray(x_nhwc), jnp.asarray(np.asarray(y).astype(np.int32))
        t = time.perf_counter()
        if scan_steps:
            run = train_steps.lower(self.state, x, yj, scan_steps).compile()
        else:
            run = train_step.lower(self.state, x, yj).compile()
        compile_seconds = time.perf_counter() - t

        def step():
            self.state, loss = run(self.state, x, yj)
            loss.block_until_ready()
        return step, compile_seconds

    def logits(self, x_nhwc, tta_level) -> np.ndarray:
        from airbench_jax.evaluation import infer_arrays
        s = self.state
        return np.asarray(infer_arrays(s.graphdef, s.params, s.rest, x_nhwc, tta_level,
                                       batch=min(2000, len(x_nhwc))))


SIDES = {"torch": TorchSide, "jax": JaxSide}


def accepted(fn, kwargs: dict) -> dict:
    """kwargs restricted to fn's parameters (all of them if fn takes **kwargs)."""
    import inspect
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def deltas(after: dict, before: dict, names) -> dict:
    return {k: np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64) for k in names}
