"""Short real-data runs on $AIRBENCH_DATA (skipped when it is unset)."""
import pytest
import torch

from airbench_common import load_cifar10


@pytest.mark.slow
def test_short_airbench94_run_beats_bar(real_data_dir):
    """airbench94 at reduced width (32,64,64), batch 250, 2 epochs on the first 5000 training
    images, evaluated on the first 1000 test images. Bar: 30% (chance is 10%)."""
    from airbench_torch import run_recipe
    tr = load_cifar10("train", real_data_dir)
    te = load_cifar10("test", real_data_dir)
    rec = run_recipe("airbench94", 0, overrides=dict(widths=(32, 64, 64), batch_size=250,
                                                     epochs=2),
                     train_data=(tr[0][:5000], tr[1][:5000]), test_data=(te[0][:1000], te[1][:1000]),
                     device="cpu", eval_every_epoch=False, log=lambda *a: None)
    assert rec["status"] == "ok" and rec["steps"] == 40
    assert rec["acc_tta"] > 0.30, rec["acc_tta"]
    assert rec["acc"] > 0.30, rec["acc"]


# accuracy bars on the 1000-image test subset (chance 0.10, its standard error there ~0.01): the
# net trained on all 2000 images must reach 2.5x chance; the two trained on 1200 selected images
# (36 steps; training on the hardest examples alone learns slowest) 3 standard errors above it
BAR_FULL, BAR_SUBSET = 0.25, 0.13


@pytest.mark.slow
def test_readme_data_selection_example_runs_with_import_changed(real_data_dir):
    """Upstream README's data-selection example with only the import changed. To fit in a test it
    runs on 2000 training images with a narrow net (make_net=...), 3 epochs at batch 100 instead
    of 16 at 1024 (and verbose=False); every API call is the README's. Each net must beat chance by a
    margin on 1000 real test images, and the low-confidence selection must pick examples the
    first net is less sure of. (tests/test_jax_realdata.py runs the same on the JAX side.)"""
    from airbench_torch import train94, infer, evaluate, CifarLoader
    from airbench_torch import make_net94
    small = lambda: make_net94(widths=dict(block1=16, block2=32, block3=32), device="cpu")
    path = str(real_data_dir)
    kw = dict(epochs=3, make_net=small, verbose=False, seed=0)
    torch.manual_seed(0)

    def subset(loader, n=2000):
        loader.images = loader.images[:n]
        loader.labels = loader.labels[:n]
        return loader

    test = CifarLoader(path, train=False, batch_size=1000)
    test.images, test.labels = test.images[:1000], test.labels[:1000]

    net = train94(subset(CifarLoader(path, train=True, batch_size=100,
                                     aug=dict(flip=True, translate=2), altflip=True, seed=0)),
                  label_smoothing=0, **kw)
    acc0 = evaluate(net, test)
    loader = subset(CifarLoader(path, train=True, batch_size=1000))
    logits = infer(net, loader)
    conf = logits.log_softmax(1).amax(1) # confidence
    assert logits.shape == (2000, 10)

    train_loader = subset(CifarLoader(path, train=True, batch_size=100,
                                      aug=dict(flip=True, translate=2), seed=1))
    mask = (torch.rand(len(train_loader.labels)) < 0.6)
    print('Training on %d images selected randomly' % mask.sum())
    train_loader.images = train_loader.images[mask]
    train_loader.labels = train_loader.labels[mask]
    net1 = train94(train_loader, **kw)

    train_loader = subset(CifarLoader(path, train=True, batch_size=100,
                                      aug=dict(flip=True, translate=2), seed=1))
    mask = (conf < conf.float().quantile(0.6))
    print('Training on %d images selected based on minimum confidence' % mask.sum())
    assert 0.55 < mask.float().mean() < 0.65
    assert conf[mask].mean() < conf[~mask].mean()
    train_loader.images = train_loader.images[mask]
    train_loader.labels = train_loader.labels[mask]
    net2 = train94(train_loader, **kw)
    accs = [acc0] + [evaluate(n, test, tta_level=2) for n in (net1, net2)]
    print("JPEG CIFAR-10 test[:1000] accuracies:", accs)
    assert accs[0] > BAR_FULL and min(accs[1:]) > BAR_SUBSET, accs
