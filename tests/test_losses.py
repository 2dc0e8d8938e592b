"Integration tests of swrm_fastai.losses with real (tiny) fastai Learners: fits, export/load_learner, save/load, DDP."
import math, os
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback
from fastai.callback.progress import *  # Learner.no_bar
from fastai.callback.mixup import MixUp
from fastai.callback.schedule import *  # Learner.lr_find
from fastai.interpret import ClassificationInterpretation
from swrm_fastai.similarity import SimilarityWindow
from swrm_fastai.patches import sidecar_path
from swrm_fastai.losses import (DySWRMLoss, SWRMLoss, SWRLoss, SWMLoss, ClassBalancedLoss, LDAMLoss, LogitAdjustedLoss,
                                BalancedSoftmaxLoss, MarginCELoss, margin_ce)
from swrm_fastai.core import class_counts
from swrm_fastai.models import cosine_head
from swrm_fastai.test_utils import blobs_dls, blob_items

COUNTS = [80, 40, 20, 10, 6, 4]
NAMES = [f'class{i}' for i in range(len(COUNTS))]
C, NF = len(COUNTS), 2


def make_dls(seed=0, bs=16):
    "The shared long-tailed blobs of `swrm_fastai.test_utils` with `COUNTS`, 5 validation points a class; and the validation items"
    return blobs_dls(COUNTS, n_valid=5, seed=seed, bs=bs), [o for o in blob_items(COUNTS, 5, seed) if o[2] == 1]


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(NF, 16), nn.ReLU(), nn.Linear(16, C))


def make_learner(loss, path, model_seed=0, **kwargs):
    "Same data every time; `model_seed` changes only the initial model"
    dls, _ = make_dls()
    return Learner(dls, make_model(model_seed), loss_func=loss, path=path, **kwargs)


def fit(learn, n=1, lr=1e-2, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, lr, **kwargs)


def test_class_counts_from_fastai_dls():
    dls, _ = make_dls()
    assert class_counts(dls).tolist() == COUNTS
    assert list(dls.vocab) == NAMES


def test_dyswrm_trains_as_loss_func_and_survives_export(tmp_path):
    "positions move during a plain fit; export/load_learner keeps predictions and positions identical"
    learn = make_learner(DySWRMLoss(COUNTS, window=3, lr=0.05, seed=1), tmp_path)
    p0 = learn.loss_func.positions.detach().clone()
    fit(learn, 2)
    lf = learn.loss_func
    assert not torch.equal(lf.positions.detach(), p0)
    assert int(lf.n_steps) == 2 * len(learn.dls.train)
    assert torch.isfinite(lf.positions).all()
    _, xs_valid = make_dls()
    learn.export('export.pkl')
    learn2 = load_learner(tmp_path / 'export.pkl')
    assert isinstance(learn2.loss_func, DySWRMLoss)
    assert torch.equal(learn2.loss_func.positions.detach(), lf.positions.detach())
    assert torch.equal(learn2.loss_func.exp_avg_sq, lf.exp_avg_sq)
    p1, _ = learn.get_preds(dl=learn.dls.test_dl(xs_valid))
    p2, _ = learn2.get_preds(dl=learn2.dls.test_dl(xs_valid))
    assert torch.equal(p1, p2)
    # predictions are the softmax of the raw logits (nothing added at inference)
    with torch.no_grad(): logits = learn.model(torch.stack([o[0] for o in xs_valid]))
    torch.testing.assert_close(p1, F.softmax(logits, -1))
    # the similarity window snapshot reflects the trained positions
    sw = learn2.loss_func.as_window()
    assert torch.equal(sw.positions, lf.positions.detach()) and sw.window == 3


def test_save_load_restores_dyswrm(tmp_path):
    "learn.save/learn.load bring back the DySWRM loss (into a learner built with plain CE) and the same predictions"
    learn = make_learner(DySWRMLoss(COUNTS, window=3, lr=0.05), tmp_path)
    fit(learn, 1)
    f = learn.save('m')
    assert sidecar_path(f).exists() and sidecar_path(f).name == 'm.swrm.pth'
    learn2 = make_learner(nn.CrossEntropyLoss(), tmp_path, model_seed=5)
    learn2.load('m')
    assert isinstance(learn2.loss_func, DySWRMLoss)
    for k, v in learn.loss_func.state_dict().items(): assert torch.equal(learn2.loss_func.state_dict()[k], v), k
    pa, ya = learn.get_preds()
    pb, yb = learn2.get_preds()
    assert torch.equal(pa, pb) and torch.equal(ya, yb)
    # identical losses on the validation set (same model, same positions)
    la, lb = learn.validate()[0], learn2.validate()[0]
    assert la == lb
    # the restored loss keeps training, and its vector keeps moving
    s0 = learn2.loss_func.positions.detach().clone()
    fit(learn2, 1)
    assert not torch.equal(learn2.loss_func.positions.detach(), s0)
    assert int(learn2.loss_func.n_steps) == 2 * len(learn.dls.train)


def test_save_load_swrm_and_window(tmp_path):
    sw = SimilarityWindow(COUNTS, torch.tensor([0., 2., 1., 5., 3., 4.]), window=3, beta=2., names=NAMES)
    learn = make_learner(SWRMLoss.from_window(sw), tmp_path)
    learn.similarity_window = sw
    fit(learn, 1)
    learn.save('s')
    learn2 = make_learner(nn.CrossEntropyLoss(), tmp_path, model_seed=3)
    learn2.load('s')
    assert isinstance(learn2.loss_func, SWRMLoss)
    assert torch.equal(learn2.loss_func.class_weights, sw.weights)
    assert torch.equal(learn2.loss_func.class_margins, sw.margins)
    sw2 = learn2.similarity_window
    assert isinstance(sw2, SimilarityWindow) and sw2.names == NAMES and sw2.beta == 2.
    assert torch.equal(sw2.positions, sw.positions) and torch.equal(sw2.margins, sw.margins)
    assert torch.equal(learn.get_preds()[0], learn2.get_preds()[0])
    # other losses: nothing changes, no sidecar
    learn3 = make_learner(nn.CrossEntropyLoss(), tmp_path)
    f = learn3.save('plain')
    assert not sidecar_path(f).exists()
    learn3.load('plain')
    assert isinstance(learn3.loss_func, nn.CrossEntropyLoss)


def test_lr_find_restores_dyswrm_positions(tmp_path):
    "lr_find saves and loads around its trial: the DySWRM vector it moved comes back"
    learn = make_learner(DySWRMLoss(COUNTS, window=3), tmp_path)
    p0 = learn.loss_func.positions.detach().clone()
    seen = []
    class Spy(Callback):
        def after_batch(self): seen.append(self.learn.loss_func.positions.detach().clone())
    with learn.no_bar(), learn.no_logging(), learn.added_cbs(Spy()): learn.lr_find(num_it=8, show_plot=False)
    assert len(seen) > 1 and not torch.equal(seen[-1], p0)   # the trial moved the vector...
    assert torch.equal(learn.loss_func.positions.detach(), p0)  # ...and load put it back
    assert int(learn.loss_func.n_steps) == 0


def _sw(): return SimilarityWindow(COUNTS, torch.tensor([0., 2., 1., 5., 3., 4.]), 3)
LOSSES = dict(swrm=lambda: SWRMLoss.from_window(_sw()), swr=lambda: SWRLoss.from_window(_sw()),
              swm=lambda: SWMLoss.from_window(_sw()), dyswrm=lambda: DySWRMLoss(COUNTS, 3),
              cb=lambda: ClassBalancedLoss(COUNTS), cb_focal=lambda: ClassBalancedLoss(COUNTS, gamma=2.),
              ldam=lambda: LDAMLoss(COUNTS), logit_adjusted=lambda: LogitAdjustedLoss(COUNTS),
              balanced_softmax=lambda: BalancedSoftmaxLoss(COUNTS))

@pytest.mark.parametrize('make_loss', list(LOSSES.values()), ids=list(LOSSES))
def test_every_loss_fits_and_reports_unreduced_losses(tmp_path, make_loss):
    "a short fit (with MixUp: y_int) is finite; get_preds(with_loss=True) and the interpretation use reduction='none'"
    lf = make_loss()
    learn = make_learner(lf, tmp_path)
    if isinstance(lf, LDAMLoss): cosine_head(learn.model)
    fit(learn, 1, cbs=MixUp())
    preds, targs, losses = learn.get_preds(with_loss=True)
    default = lf.reduction
    assert default == 'mean'  # LDAM without weights too: its weighted mean is the same value, and MixUp knows 'mean'
    assert losses.shape == (len(targs),) and torch.isfinite(losses).all()
    with torch.no_grad(): logits = learn.model(torch.stack([learn.dls.valid_ds[i][0] for i in range(len(targs))]))
    lf.reduction = 'none'
    torch.testing.assert_close(losses, lf(logits, targs))
    lf.reduction = default
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == len(targs)


def test_reweighted_loss_in_a_fit(tmp_path):
    "the copy returned by reweighted trains, the original keeps its weights"
    lf = LDAMLoss(COUNTS)
    learn = make_learner(lf, tmp_path)
    fit(learn, 1)
    learn.loss_func = lf.reweighted(torch.linspace(.5, 2., C))
    fit(learn, 1)
    assert torch.equal(lf.class_weights, torch.ones(C))
    assert torch.equal(learn.loss_func.class_weights, torch.linspace(.5, 2., C))


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        lf = DySWRMLoss(COUNTS, window=3, lr=0.05, seed=0)
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        for _ in range(5):
            z = torch.randn(12, C, generator=g); y = torch.randint(0, C, (12,), generator=g)
            lf(z, y).backward()
        torch.save(lf.state_dict(), os.path.join(out_dir, f'rank{rank}.pth'))
    finally: dist.destroy_process_group()


def test_dyswrm_gradient_averaged_across_ranks(tmp_path):
    "under torch.distributed (gloo, 2 CPU processes) the vectors stay identical and equal a single-process run on averaged gradients"
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    s0, s1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    for k in s0: assert torch.equal(s0[k], s1[k]), k
    # single process: average the two ranks' gradients by hand, step the same Adam
    ref = DySWRMLoss(COUNTS, window=3, lr=0.05, seed=0)
    gens = [torch.Generator().manual_seed(100 + r) for r in (0, 1)]
    for _ in range(5):
        batches = [(torch.randn(12, C, generator=g), torch.randint(0, C, (12,), generator=g)) for g in gens]
        grads = []
        for z, y in batches:
            p = ref.positions.detach().clone().requires_grad_()
            torch.func.functional_call(ref, {'positions': p}, (z, y)).backward()
            grads.append(p.grad)
        ref.positions.grad = (grads[0] + grads[1]) / 2
        ref._step_positions(ref.positions)
    torch.testing.assert_close(s0['positions'], ref.positions.detach())
    assert int(s0['n_steps']) == 5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_dyswrm_fp16_fit_on_cuda(tmp_path):
    "to_fp16 on CUDA: finite float32 losses, the vector lives and trains on the GPU, save/load round trip"
    learn = make_learner(DySWRMLoss(COUNTS, window=3, lr=0.05), tmp_path).to_fp16()
    p0 = learn.loss_func.positions.detach().clone()
    fit(learn, 2)
    lf = learn.loss_func
    assert lf.positions.device.type == 'cuda' and all(b.device.type == 'cuda' for b in lf.buffers())
    assert torch.isfinite(lf.positions).all() and not torch.equal(lf.positions.detach().cpu(), p0)
    assert math.isfinite(learn.validate()[0])
    learn.save('gpu')
    learn2 = make_learner(nn.CrossEntropyLoss(), tmp_path); learn2.load('gpu')
    assert torch.equal(learn2.loss_func.positions.detach().cpu(), lf.positions.detach().cpu())

@pytest.mark.parametrize('name', ['swrm', 'dyswrm', 'cb', 'ldam', 'la', 'bs'])
def test_fractional_counts_refused(name):
    "Counts are numbers of training samples: a fractional count is refused by every count-taking loss, naming the class"
    c = [30, 20, 10.5, 5, 3, 2]
    make = dict(swrm=lambda: SWRMLoss.from_window(SimilarityWindow(c, torch.arange(6.), 3)), dyswrm=lambda: DySWRMLoss(c, 3),
                cb=lambda: ClassBalancedLoss(c), ldam=lambda: LDAMLoss(c), la=lambda: LogitAdjustedLoss(c),
                bs=lambda: BalancedSoftmaxLoss(c))[name]
    with pytest.raises(ValueError, match=r'class 2 has training count 10\.5: counts are numbers of training samples'): make()
