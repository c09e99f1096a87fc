"""airbench94_muon in JAX, the whole recipe in one file that reads top to bottom.

Upstream's airbench94_muon.py trains a small CifarNet to 94% on CIFAR-10 with Muon on the
convolution filters and Nesterov SGD on the rest, for 8 epochs of 2000-image batches. This file
is the same recipe told with this package's pieces: the hyper-parameters come from
airbench_common's recipe table (nothing is restated here), the net, the augmentations, Muon and
the test-time augmentation from airbench_jax, and the training loop is written out below.

JAX style: the pieces are pure functions; randomness comes from explicit keys split off one
seed; the train state is a pytree (a NamedTuple of dicts) that each step returns anew; the step
and the batch maker are jitted. Given the same seed and data it trains what
`airbench_jax.run_recipe("airbench94_muon", seed)` trains, to the bit (tests/test_example_muon.py
checks that on the CPU, step by step and for a whole run), so the keys are split the way
run_recipe splits them.

    python examples/airbench94_muon.py [--data-dir DIR] [--seed N] [--epochs E] [--n-train N]

prints upstream's per-epoch table (time_seconds: the set-up with the whitening, then the
training steps; the step is compiled before the clock runs, and evaluation is not timed) and the
final test accuracy with test-time augmentation.
"""

#############################################
#                  Setup                    #
#############################################

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from airbench_common.data import load_cifar10
from airbench_common.errors import UsageError
from airbench_common.recipes import Recipe, get_recipe
from airbench_common.schedules import lr_schedules, param_groups
from airbench_common.table import Table
from airbench_common.validate import check_seed
from airbench_jax import CifarLoader, evaluate, make_net
from airbench_jax import augment as aug
from airbench_jax import precision as prec
from airbench_jax.model import set_whitening
from airbench_jax.muon import muon
from airbench_jax.optim import labels_for, lr_array, sgd_group
from airbench_jax.state import per_example_loss

RECIPE = "airbench94_muon"

#############################################
#                DataLoader                 #
#############################################

# Upstream's loader, split into what is done once and what is done per batch. Once: normalize,
# flip a random half of the images (every other epoch then flips them all, so each image is seen
# both ways in alternate epochs: "altflip") and reflect-pad by `translate` pixels, so that a
# random translation is a random crop. Per batch: a random crop, the epoch's flip (and cutout,
# which this recipe does not use).


def prepare_train_images(recipe: Recipe, images, key, dtype):
    """uint8 NHWC training images -> normalized, half pre-flipped, reflect-padded (on device)."""
    x = aug.normalize(images, dtype)
    if recipe.flip and recipe.altflip:
        x = aug.random_flip(key, x)
    return aug.pad_reflect(x, recipe.translate)


@functools.partial(jax.jit, static_argnums=0)
def augmented_batch(recipe: Recipe, padded, labels, order, i, epoch, key):
    """Batch `i` of the epoch whose image order is `order`: its images cropped, flipped and cut
    out with the batch's own key (fold_in of the epoch's augmentation key), and its labels."""
    picked = jax.lax.dynamic_slice(order, (i * recipe.batch_size,), (recipe.batch_size,))
    images = aug.augment_batch(jax.random.fold_in(key, i), padded[picked], epoch,
                               flip=recipe.flip, altflip=recipe.altflip,
                               cutout_size=recipe.cutout)
    return images, labels[picked]


def epoch_batches(recipe: Recipe, padded, labels, epoch: int, key):
    """One epoch's batches (the last partial batch is dropped, as upstream's loader does)."""
    k_order, k_aug = jax.random.split(jax.random.fold_in(key, epoch))
    order = aug.epoch_order(k_order, padded.shape[0])
    for i in range(padded.shape[0] // recipe.batch_size):
        yield augmented_batch(recipe, padded, labels, order, i, epoch, k_aug)

#############################################
#            Network and state              #
#############################################

# The net is upstream's CifarNet (airbench_jax.model): a frozen 2x2 whitening conv set from the
# training images' patch covariance, three ConvGroups (conv, max-pool, BatchNorm, GELU, conv,
# BatchNorm, GELU), a max-pool and a linear head. Flax NNX splits it into a static graph and
# two pytrees: `params`, what the optimizers train, and `rest`, what they do not (BatchNorm's
# running statistics, the whitening kernel, counters).


class TrainState(NamedTuple):
    params: Any
    rest: Any
    opt_state: Any


def make_optimizer(recipe: Recipe, n_train: int, params, ns_dtype):
    """Upstream's two optimizers as one optax.partition over the recipe's parameter groups:
    Nesterov SGD with coupled weight decay on the whitening bias, the BatchNorm biases and the
    head (upstream's optimizer1), Muon on the conv filters (optimizer2). Each group's learning
    rate per step is its lr times its schedule (airbench_common.schedules.lr_schedules: linear
    decay to 0 over the run, and over its first 3 epochs for the whitening bias, frozen after).
    Muon's Newton-Schulz iteration runs in `ns_dtype`. -> an optax.GradientTransformation"""
    schedules = lr_schedules(recipe, n_train)
    transforms = {}
    for group in param_groups(recipe, n_train):
        lrs = lr_array(group, schedules)
        transforms[group.name] = (
            muon(lrs, group.momentum, recipe.muon_ns_steps, recipe.muon_eps, ns_dtype)
            if group.kind == "muon" else sgd_group(lrs, group.weight_decay, group.momentum))
    return optax.partition(transforms, labels_for(params, recipe))


def init(recipe: Recipe, train_images, n_train: int, key, policy):
    """The net from `key` (PyTorch's init) in the precision `policy`'s dtypes, whitened from the
    first `recipe.whiten_images` training images, and its optimizer
    -> (graphdef, optimizer, TrainState)."""
    dtypes = prec.dtypes(policy)
    # run_recipe splits this key for the net and airbench96_faster's proxy net; taking the
    # same half gives the same net for the same seed
    k_net, _ = jax.random.split(key)
    net = make_net(recipe, k_net, dtype=dtypes["compute"], param_dtype=dtypes["params"],
                   tf32=policy.tf32)
    set_whitening(net, aug.normalize(train_images[:recipe.whiten_images]), recipe.whiten_eps)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    tx = make_optimizer(recipe, n_train, params, dtypes["newton_schulz"])
    return graphdef, tx, TrainState(params, rest, tx.init(params))


def as_net(graphdef, state: TrainState):
    """The trained net as a Flax module (for airbench_jax.evaluate)."""
    return nnx.merge(graphdef, state.params, state.rest)

#############################################
#               Training step               #
#############################################


def make_train_step(recipe: Recipe, graphdef, tx):
    """One step: the forward pass in training mode (batch statistics, running statistics
    updated), the summed label-smoothed cross-entropy (PyTorch's formula), its gradient, and
    both optimizers' updates -> (new state, summed loss, correct predictions)."""

    def loss_fn(params, rest, images, labels):
        net = nnx.merge(graphdef, params, rest)
        logits = net(images, train=True)
        new_rest = nnx.to_pure_dict(nnx.split(net, nnx.Param, ...)[2])
        loss = per_example_loss(logits, labels, recipe.label_smoothing).sum()
        return loss, (new_rest, logits)

    @jax.jit
    def train_step(state: TrainState, images, labels):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (rest, logits)), grads = grad_fn(state.params, state.rest, images, labels)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = (logits.argmax(-1) == labels).sum()
        return TrainState(params, rest, opt_state), loss, correct

    return train_step

#############################################
#                 Training                  #
#############################################


def train(recipe: Recipe, train_data, test_data, seed: int, log=print):
    """Train `recipe` on `train_data` = (uint8 NHWC images, labels), print the per-epoch table
    through `log` (evaluated on `test_data`) -> (final net, TTA test accuracy). The precision
    policy is the device's default (float32 on a CPU; float16 with Newton-Schulz in bfloat16 on
    a GPU), as run_recipe's; run it inside that policy's `prec.matmul_context`, as main does."""
    train_images, train_labels = jnp.asarray(train_data[0]), jnp.asarray(train_data[1], jnp.int32)
    n_train = len(train_labels)
    total_steps = recipe.total_steps(n_train)
    steps_per_epoch = recipe.steps_per_epoch(n_train)
    test_loader = CifarLoader(None, train=False, batch_size=2000, data=test_data)
    policy = prec.resolve()

    # Keys: one seed, split once into the init's, the pre-flip's and the epochs' keys
    k_init, k_flip, k_epochs = jax.random.split(jax.random.PRNGKey(seed), 3)

    # Initialize the net and whiten it from the training images (timed: upstream times the
    # whitening, which needs the covariance of the images' 2x2 patches and its eigenvectors)
    t0 = time.perf_counter()
    graphdef, tx, state = init(recipe, train_images, n_train, k_init, policy)
    state = jax.block_until_ready(state)
    time_seconds = time.perf_counter() - t0
    padded = prepare_train_images(recipe, train_images, k_flip, jnp.dtype(policy.compute))
    train_step = make_train_step(recipe, graphdef, tx)

    # Compile the step before the clock runs: the state is a value, not a variable, so one
    # step on the first batch compiles it and its result is simply dropped
    first_images, first_labels = next(epoch_batches(recipe, padded, train_labels, 0, k_epochs))
    jax.block_until_ready(train_step(state, first_images, first_labels))

    table = Table(log)
    table.head()
    step = 0
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):

        ####################
        #     Training     #
        ####################

        t0 = time.perf_counter()
        for images, labels in epoch_batches(recipe, padded, train_labels, epoch, k_epochs):
            state, loss, correct = train_step(state, images, labels)
            step += 1
            if step >= total_steps:
                break
        state = jax.block_until_ready(state)
        time_seconds += time.perf_counter() - t0

        ####################
        #    Evaluation    #
        ####################

        # upstream's train_loss and train_acc: those of the epoch's last batch
        table.row(run=seed if epoch == 0 else None, epoch=epoch,
                  train_loss=float(loss) / recipe.batch_size,
                  train_acc=float(correct) / recipe.batch_size,
                  val_acc=evaluate(as_net(graphdef, state), test_loader, tta_level=0),
                  time_seconds=time_seconds)

    ####################
    #  TTA Evaluation  #
    ####################

    # tta_level 2 (airbench_jax.evaluate): the mean of the logits of the image and its mirror,
    # averaged half and half with those of the image shifted one pixel up-left and down-right
    net = as_net(graphdef, state)
    tta_val_acc = evaluate(net, test_loader, tta_level=recipe.tta_level)
    table.row(final=True, epoch="eval", tta_val_acc=tta_val_acc, time_seconds=time_seconds)
    return net, tta_val_acc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="CIFAR-10 folder (default: $AIRBENCH_DATA, else the download cache)")
    parser.add_argument("--seed", type=int, default=0, help="the run's PRNG seed (default 0)")
    parser.add_argument("--epochs", type=float, default=None,
                        help=f"epochs to train (default {get_recipe(RECIPE).epochs}, the recipe's)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="train on the first N training images (default: all)")
    args = parser.parse_args(argv)
    try:
        overrides = {} if args.epochs is None else {"epochs": args.epochs}
        recipe = get_recipe(RECIPE, **overrides)
        seed = check_seed(args.seed, "--seed")
        if args.n_train is not None and args.n_train < recipe.batch_size:
            raise UsageError(f"--n-train {args.n_train}: give at least one batch of training "
                             f"images, {recipe.batch_size}")
        images, labels = load_cifar10("train", args.data_dir)
        train_data = images[:args.n_train], labels[:args.n_train]
        test_data = load_cifar10("test", args.data_dir)
        with prec.matmul_context(prec.resolve()):
            _, tta_val_acc = train(recipe, train_data, test_data, seed)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"final test accuracy with TTA: {tta_val_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
