"""Real-data tests of airbench_jax: need CIFAR-10 at $AIRBENCH_DATA (skipped otherwise)."""
import os

import numpy as np
import pytest

DATA = os.environ.get("AIRBENCH_DATA")
pytestmark = pytest.mark.skipif(not DATA, reason="AIRBENCH_DATA is unset: no CIFAR-10 to train on")

EXAMPLE = '''
import torch
from airbench import train94, infer, evaluate, CifarLoader

net = train94(label_smoothing=0) # train this network without label smoothing to get a better confidence signal

loader = CifarLoader('cifar10', train=True, batch_size=1000)
logits = infer(net, loader)
conf = logits.log_softmax(1).amax(1) # confidence

train_loader = CifarLoader('cifar10', train=True, batch_size=1024, aug=dict(flip=True, translate=2))
mask = (torch.rand(len(train_loader.labels)) < 0.6)
print('Training on %d images selected randomly' % mask.sum())
train_loader.images = train_loader.images[mask]
train_loader.labels = train_loader.labels[mask]
train94(train_loader, epochs=16) # yields around 93% accuracy

train_loader = CifarLoader('cifar10', train=True, batch_size=1024, aug=dict(flip=True, translate=2))
mask = (conf < conf.float().quantile(0.6))
print('Training on %d images selected based on minimum confidence' % mask.sum())
train_loader.images = train_loader.images[mask]
train_loader.labels = train_loader.labels[mask]
train94(train_loader, epochs=16) # yields around 94% accuracy => low-confidence sampling is better than random.
'''

# The only edits: the import, and jnp/numpy spellings of three torch tensor calls.
PORTED = (EXAMPLE
          .replace("import torch\nfrom airbench import",
                   "import jax, jax.numpy as jnp, numpy as np\nfrom airbench_jax import")
          .replace("logits.log_softmax(1).amax(1)", "jax.nn.log_softmax(logits, 1).max(1)")
          .replace("torch.rand(len(train_loader.labels))", "np.random.rand(len(train_loader.labels))")
          .replace("conf.float().quantile(0.6)", "jnp.quantile(conf, 0.6)"))


def test_data_selection_example_runs(monkeypatch):
    import airbench_jax
    from airbench_common import load_cifar10

    n_sub = 2560
    test = load_cifar10("test")
    test = (test[0][:1000], test[1][:1000])
    orig_loader, orig_train94 = airbench_jax.CifarLoader, airbench_jax.train94
    from airbench_jax.train import run_recipe_with_state, net_from_state

    class SmallLoader(orig_loader):  # a data subset, for speed
        def __init__(self, path=None, *a, **kw):
            super().__init__(None, *a, **kw)
            self.images, self.labels = self.images[:n_sub], self.labels[:n_sub]

    def tiny_train94(train_loader=None, epochs=None, label_smoothing=None, **kw):
        loader = train_loader or SmallLoader(train=True, batch_size=256,
                                             aug=dict(flip=True, translate=2), altflip=True)
        ov = dict(epochs=1, widths=(16, 32, 32), batch_size=min(256, len(loader.images) // 2),
                  flip=bool(loader.aug.get("flip")), translate=loader.aug.get("translate", 0),
                  altflip=loader.altflip)
        if label_smoothing is not None:
            ov["label_smoothing"] = label_smoothing
        rec, st = run_recipe_with_state(
            "airbench94", 0, overrides=ov, verbose=False,
            train_data=(np.asarray(loader.images), np.asarray(loader.labels)), test_data=test)
        assert rec["status"] == "ok"
        return net_from_state(st)

    monkeypatch.setattr(airbench_jax, "CifarLoader", SmallLoader)
    monkeypatch.setattr(airbench_jax, "train94", tiny_train94)
    ns = {}
    exec(compile(PORTED, "readme_example", "exec"), ns)
    assert int(ns["mask"].sum()) > 0 and ns["logits"].shape == (n_sub, 10)


def test_short_real_run_beats_chance():
    """airbench94 at reduced width on 5000 images, 3 epochs: well above chance (10%)."""
    from airbench_common import load_cifar10
    from airbench_jax import run_recipe
    tr, te = load_cifar10("train"), load_cifar10("test")
    rec = run_recipe("airbench94", 0, overrides=dict(epochs=3, widths=(32, 64, 64), batch_size=250),
                     train_data=(tr[0][:5000], tr[1][:5000]), test_data=(te[0][:2000], te[1][:2000]),
                     eval_every_epoch=False)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["acc_tta"] > 0.40, rec["acc_tta"]
    assert rec["data"]["n_train"] == 5000 and rec["compile_seconds"] > 0
