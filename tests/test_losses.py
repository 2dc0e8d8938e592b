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
import pickle
import cloudpickle
from fastcore.test import test_eq as eq, test_close as close, test_fail as refused
from fastai.torch_core import TensorBase
from fastai.data.transforms import TensorCategory
from swrm_fastai.similarity import standardize, swr_weights
from swrm_fastai.losses import _logit_margin_needed, _check_logits_targets, cb_weights, posthoc_adjust
from _reference import ref_loss

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


# The unit batteries below compare each loss with an independent reference (tests/_reference.py) on tiny tensors;
# each test seeds its own draws.


def lesson_window():
    "The notebook's SWRM lesson: six classes on a line, a window of three"
    return SimilarityWindow(torch.tensor([500, 300, 100, 40, 10, 5]), torch.tensor([0., .1, 2., 2.2, .15, 5.]), window=3)

LESSON_Y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 4])

def test_margin_ce_reference():
    "margin_ce equals the per-sample float64 loop for weights, margins, offsets, scale and gamma, every reduction"
    g = torch.Generator().manual_seed(0)
    for C, B in [(3, 7), (10, 40), (37, 100)]:
        z = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
        y = torch.cat([torch.arange(C), torch.randint(0, C, (B - C,), generator=g)])  # every class appears
        w, m, o = torch.rand(C, generator=g, dtype=torch.float64) + .1, torch.rand(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
        for kw in [{}, dict(w=w), dict(m=m), dict(w=w, m=m), dict(o=o), dict(m=-m, s=30.), dict(w=w, gamma=2.), dict(w=w, m=m, o=o, s=2., gamma=.5)]:
            ref = ref_loss(z, y, **kw)
            args = dict(weight=kw.get('w'), target_margin=kw.get('m'), class_offset=kw.get('o'), scale=kw.get('s', 1.), gamma=kw.get('gamma', 0.))
            close(margin_ce(z, y, reduction='none', **args), ref, eps=1e-9)
            close(margin_ce(z, y, **args), ref.sum() / B, eps=1e-9)   # mean is (1/B) sum, not / sum of weights
            close(margin_ce(z, y, reduction='sum', **args), ref.sum(), eps=1e-8)
    # plain case equals PyTorch
    close(margin_ce(z, y), F.cross_entropy(z, y), eps=1e-12)


def test_margin_ce_gradcheck():
    "gradcheck of margin_ce's one-node backward; no (wrong) second derivative"
    torch.manual_seed(0)
    # gradcheck of the one-node backward: logits, weights, margins (both paths) and offsets, every reduction
    zg = torch.randn(9, 5, dtype=torch.float64, requires_grad=True); yg = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1, 4])
    wg, og = (torch.rand(5, dtype=torch.float64) + .2).requires_grad_(), torch.randn(5, dtype=torch.float64, requires_grad=True)
    for mv, kw in [(.7, {}), (.7, dict(gamma=1.5)), (-.8, dict(scale=3., margin_in_logits=True)), (.2, dict(scale=2., margin_in_logits=False))]:
        mg = (torch.rand(5, dtype=torch.float64) * mv).requires_grad_()
        for red in ('mean', 'sum', 'none'):
            assert torch.autograd.gradcheck(lambda z_, w_, m_, o_: margin_ce(z_, yg, w_, m_, o_, reduction=red, **kw), (zg, wg, mg, og))
    # no second derivative: with create_graph=True the gradient comes back without a graph (never a wrong one)
    zc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    gzc, = torch.autograd.grad(margin_ce(zc, torch.tensor([0, 1, 2, 0])), zc, create_graph=True)
    assert not gzc.requires_grad


def test_margin_ce_margin_paths():
    "the closed-form margin equals the margin added to the logits"
    torch.manual_seed(1)
    # the closed-form margin equals the margin added to the logits
    zq, yq = torch.randn(64, 10, dtype=torch.float64) * 5, torch.randint(0, 10, (64,))
    mq = torch.rand(10, dtype=torch.float64) * 4 - .5
    close(margin_ce(zq, yq, target_margin=mq, reduction='none', margin_in_logits=False),
               margin_ce(zq, yq, target_margin=mq, reduction='none', margin_in_logits=True), eps=1e-12)
    eq(_logit_margin_needed(torch.tensor([.5, -.9])), False); eq(_logit_margin_needed(torch.tensor([.5, -1.1])), True)
    eq(_logit_margin_needed(torch.tensor([.5, -.6]), 2.), True)  # s m = -1.2


def test_margin_ce_extremes():
    "confident, hopeless, huge positive and negative margins: finite, and equal to PyTorch on the plain formula"
    # extreme cases of the margin formula: confident (p_y rounds to 1), hopeless, huge positive and negative margins
    ze = torch.tensor([[40., 0., 0.], [0., 0., 0.], [-60., 30., 0.], [0., 80., 0.]])
    ye = torch.tensor([0, 1, 0, 0])
    for mv in (0., .5, -15., 3., 50., -50., 300., -300.):
        mm = torch.full((3,), mv)
        ref = torch.stack([-(ze[b].double().index_put((ye[b:b+1],), ze[b, ye[b]].double() + mv)).log_softmax(0)[ye[b]] for b in range(4)])
        got = margin_ce(ze, ye, target_margin=mm, reduction='none')
        eq(got.dtype, torch.float32); close(got.double(), ref, eps=1e-5 * max(1., float(ref.abs().max())))
        zg_ = ze.clone().requires_grad_(); mg_ = mm.clone().requires_grad_()
        margin_ce(zg_, ye, target_margin=mg_).backward()
        assert torch.isfinite(zg_.grad).all() and torch.isfinite(mg_.grad).all(), mv
        zr = ze.double().clone().requires_grad_(); mr = mm.double().clone().requires_grad_()
        F.cross_entropy(zr + F.one_hot(ye, 3).double() * mr[ye][:, None], ye).backward()
        close(zg_.grad.double(), zr.grad, eps=1e-5); close(mg_.grad.double(), mr.grad, eps=1e-5)


def test_margin_ce_batch_shape():
    "[..., C] inputs: 'none' keeps the batch shape"
    torch.manual_seed(2)
    # [..., C] inputs: 'none' keeps the batch shape
    z3, y3 = torch.randn(2, 5, 4, dtype=torch.float64), torch.randint(0, 4, (2, 5))
    eq(margin_ce(z3, y3, reduction='none').shape, (2, 5))
    close(margin_ce(z3, y3, reduction='none'), F.cross_entropy(z3.transpose(1, 2), y3, reduction='none'), eps=1e-12)


def test_margin_ce_loss_fastai_conventions():
    "reduction property (validated), activation/decodes, axis, flatten, y_int, fastai tensor subclasses, bad options"
    torch.manual_seed(0)
    # fastai conventions: reduction property (validated), activation/decodes, axis, flatten, y_int
    lf = MarginCELoss(4, weight=torch.tensor([1., 2., 3., 4.]))
    eq(lf.y_int, True)
    zz, yy = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    lf.reduction = 'none'; eq(lf(zz, yy).shape, (6,)); lf.reduction = 'mean'
    refused(lambda: setattr(lf, 'reduction', 'avg'), contains="reduction must be one of")
    close(lf.activation(zz), F.softmax(zz, -1)); eq(lf.decodes(zz), zz.argmax(-1))
    # axis=1 on [B, C, H] logits equals moving the class axis last
    lf1 = MarginCELoss(4, axis=1, weight=torch.tensor([1., 2., 3., 4.]))
    z4, y4 = torch.randn(2, 4, 5), torch.randint(0, 4, (2, 5))
    close(lf1(z4, y4), lf(z4.transpose(1, 2), y4))
    lf1.reduction = 'none'; eq(lf1(z4, y4).shape, (10,))
    lf2 = MarginCELoss(4, axis=1, flatten=False, reduction='none'); eq(lf2(z4, y4).shape, (2, 5))
    # fastai subclasses of Tensor are handled
    close(lf(TensorBase(zz), TensorCategory(yy)), lf(zz, yy))
    # bad options
    refused(lambda: MarginCELoss(3, scale=0.), contains="scale")
    refused(lambda: MarginCELoss(3, gamma=-1.), contains="gamma")
    refused(lambda: MarginCELoss(3, weight=[1., -1., 1.]), contains=">= 0")
    refused(lambda: MarginCELoss(3, weight=[1., float('nan'), 1.]), contains="non-finite")
    refused(lambda: MarginCELoss(3, weight=[1., 1.]), contains="3 classes")


def test_swrm_reference():
    "SWRM, SWR and SWM equal w_y * CE(z + m_y e_y, y) with the window's terms, every reduction; gradcheck in the logits"
    torch.manual_seed(0)
    sw, yy = lesson_window(), LESSON_Y
    # equals an explicit reference: w_y * CE(z + m_y e_y, y), mean over the batch
    g = torch.Generator().manual_seed(2)
    for C, B, W in [(6, 12, 3), (20, 64, 7), (50, 120, 15)]:
        cnt = torch.randint(1, 1000, (C,), generator=g); pos = torch.randn(C, generator=g)
        sw_ = SimilarityWindow(cnt, pos, window=W, beta=2.)
        z_ = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
        y_ = torch.cat([torch.arange(C), torch.randint(0, C, (B - C,), generator=g)])
        w_, m_ = sw_.weights.double(), sw_.margins.double()
        for variant, kw in [('swrm', dict(w=w_, m=m_)), ('swr', dict(w=w_)), ('swm', dict(m=m_))]:
            lf = SWRMLoss.from_window(sw_, variant)
            ref = ref_loss(z_, y_, **kw)
            close(lf(z_, y_), ref.mean(), eps=1e-6)
            lf.reduction = 'none'; close(lf(z_, y_), ref, eps=1e-6)
            lf.reduction = 'sum'; close(lf(z_, y_), ref.sum(), eps=1e-4)
    eq(type(SWRMLoss.from_window(sw, 'swr')), SWRLoss); eq(type(SWRLoss.from_window(sw)), SWRLoss)
    eq(type(SWMLoss.from_window(sw)), SWMLoss)
    eq(SWRLoss.from_window(sw).class_margins, torch.zeros(6)); eq(SWMLoss.from_window(sw).class_weights, torch.ones(6))
    refused(lambda: SWRMLoss.from_window(sw, 'sw'), contains="variant")
    # gradcheck with respect to the logits (float64)
    lf = SWRMLoss.from_window(sw).double()
    zg = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: lf(x, yy), (zg,))


def test_swrm_bad_inputs_refused():
    "wrong shapes, targets, non-finite logits and overflow are named; -inf at a non-target class is a mask"
    torch.manual_seed(0)
    sw = lesson_window()
    lf = SWRMLoss.from_window(sw)
    refused(lambda: lf(torch.randn(4, 7), torch.tensor([0, 1, 2, 3])), contains="built for 6 classes")
    refused(lambda: lf(torch.randn(4, 6), torch.tensor([0, 1, 2, 6])), contains="targets must be class indices in 0..5")
    refused(lambda: lf(torch.randn(4, 6), torch.tensor([0, -1, 2, 3])), contains="got values from -1")
    refused(lambda: lf(torch.randn(4, 6), torch.rand(4)), contains="integer tensor")
    refused(lambda: lf(torch.randn(4, 6), torch.tensor([0, 1, 2])), contains="do not match")
    yb = torch.tensor([0, 1, 2, 3])
    for r, c, bad in [(2, 3, float('nan')), (2, 3, float('inf')), (2, 2, -float('inf')), (0, 0, float('nan'))]:
        zb = torch.randn(4, 6); zb[r, c] = bad  # NaN or +inf anywhere, -inf at the target (row 2's target is 2)
        refused(lambda: lf(zb, yb), contains="non-finite values (nan or inf) in 1 of 4")
        refused(lambda: margin_ce(zb, yb, reduction='none'), contains="non-finite")
        refused(lambda: _check_logits_targets(zb, yb, True), contains="in 1 of 4")
    # -inf at another class is a class of probability 0 (a mask): finite loss and gradient, as in F.cross_entropy
    zb = torch.randn(4, 6); zb[2, 3] = zb[0, 5] = -float('inf'); _check_logits_targets(zb, yb, True)
    close(margin_ce(zb, yb), F.cross_entropy(zb, yb))
    zbg = zb.clone().requires_grad_(); lf(zbg, yb).backward(); assert torch.isfinite(zbg.grad).all() and zbg.grad[2, 3] == 0
    # finite logits whose loss overflows float32
    refused(lambda: margin_ce(torch.tensor([[3e38, -3e38]]), torch.tensor([1])), contains="overflow")
    # check=False skips the value checks (the caller's choice, e.g. to mirror GPU behaviour)
    zb = torch.randn(4, 6); zb[0, 0] = float('nan')
    assert margin_ce(zb, torch.tensor([0, 1, 2, 3]), check=False).isnan()
    refused(lambda: MarginCELoss(3, check='yes'), contains="check must be")
    refused(lambda: SWRMLoss(torch.ones(6), torch.zeros(5)), contains="6 classes")


def test_dyswrm_reference():
    "DySWRM's weights, margins and loss equal the formulas recomputed by hand from its current positions; gradcheck; init and refusals"
    torch.manual_seed(0)
    # the loss equals the reference formula with weights/margins recomputed by hand from the current positions
    g = torch.Generator().manual_seed(3)
    for C, B, W in [(5, 20, 2), (12, 48, 5), (40, 160, 15)]:
        cnt = torch.randint(1, 500, (C,), generator=g)
        lf = DySWRMLoss(cnt, window=W, beta=1.5, tau=.7, seed=C)
        lf.reduction = 'none'
        p = lf.positions.detach().double()
        q = (p - p.mean()) / p.std(unbiased=False)
        rank = torch.empty(C, dtype=torch.long); rank[torch.sort(p, stable=True).indices] = torch.arange(C)
        order = torch.sort(p, stable=True).indices
        w_ref, m_ref = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
        n = cnt.double()
        for c in range(C):
            start = min(max(int(rank[c]) - W // 2, 0), C - W)
            mem = order[start:start + W]
            w_ref[c] = math.log(1 + n.max() / n[c] * (n[mem] / n[c]).mean())
            m_ref[c] = math.log(sum(math.exp(1.5 * abs(float(q[i] - q[c])) / .7) for i in mem) / W)
        close(lf.class_weights.double(), w_ref, eps=1e-5); close(lf.class_margins.double(), m_ref, eps=1e-5)
        z_ = torch.randn(B, C, generator=g, dtype=torch.float64)
        y_ = torch.cat([torch.arange(C), torch.randint(0, C, (B - C,), generator=g)])
        ref = ref_loss(z_, y_, w=w_ref, m=m_ref)
        close(lf(z_, y_), ref, eps=1e-5)
        lf.reduction = 'mean'; close(lf(z_, y_), ref.mean(), eps=1e-5)

    # gradcheck with respect to the logits and the positions (float64, through the module itself)
    lf = DySWRMLoss(torch.tensor([50, 30, 20, 10, 5, 2]), window=3, beta=2.).double()
    zg = torch.randn(10, 6, dtype=torch.float64, requires_grad=True); yg = torch.randint(0, 6, (10,))
    pg = lf.positions.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, p: torch.func.functional_call(lf, {'positions': p}, (x, yg)), (zg, pg))
    eq(int(lf.n_steps), 0)  # gradcheck never accumulates .grad, so the hook did not step

    # seeded init; init= standardises; bad arguments
    eq(DySWRMLoss([5, 4, 3], window=2, seed=1).positions, DySWRMLoss([5, 4, 3], window=2, seed=1).positions)
    assert not torch.equal(DySWRMLoss([5, 4, 3], window=2, seed=1).positions, DySWRMLoss([5, 4, 3], window=2, seed=2).positions)
    lfi = DySWRMLoss([5, 4, 3, 2], window=2, init=torch.tensor([10., 20., 30., 60.]))
    close(lfi.positions.detach(), standardize(torch.tensor([10., 20., 30., 60.])))
    close(DySWRMLoss([5, 4, 3, 2], window=2, init=SimilarityWindow([5, 4, 3, 2], [1., 2., 3., 6.], 2)).positions.detach(), lfi.positions.detach())
    refused(lambda: DySWRMLoss([5, 0, 3], window=2), contains="class 1 has training count 0")
    refused(lambda: DySWRMLoss([5, 0, 3], window=2, names=['a', 'b', 'c']), contains="'b'")
    refused(lambda: DySWRMLoss([5, 4, 3], window=4), contains="window size")
    refused(lambda: DySWRMLoss([5, 4, 3], window=2, init=[1., 2.]), contains="different lengths")
    refused(lambda: DySWRMLoss([5, 4, 3], window=2, lr=-1.), contains="lr")
    refused(lambda: DySWRMLoss([5, 4, 3], window=2)(torch.randn(2, 4), torch.tensor([0, 1])), contains="built for 3 classes")
    # the weights always follow the current ranking and counts
    cnt6 = torch.tensor([500., 300., 100., 40., 10., 5.])
    lf = DySWRMLoss(cnt6, window=3, seed=2)
    for pos in ([0., 1., 2., 3., 4., 5.], [0., 1., 2., 3., 4., 5.5], [5., 0., 4., 1., 3., 2.]):
        with torch.no_grad(): lf.positions.copy_(torch.tensor(pos))
        close(lf.class_terms()[0], swr_weights(cnt6, torch.tensor(pos), 3), eps=1e-6)
    lf.load_state_dict(DySWRMLoss(cnt6.flip(0), window=3, seed=2).state_dict())  # other counts, other positions
    close(lf.class_terms()[0], swr_weights(cnt6.flip(0), lf.positions.detach(), 3), eps=1e-6)
    eq(cnt6, torch.tensor([500., 300., 100., 40., 10., 5.]))  # the caller's counts are copied, never changed


def test_dyswrm_adam_step():
    "the hook's Adam equals torch.optim.Adam; non-finite gradients skip the step; the unfused fallback; scale invariance"
    torch.manual_seed(0)
    lf = DySWRMLoss(torch.arange(20, 0, -1), window=5, lr=0.03)
    ref_p = lf.positions.detach().clone().requires_grad_()
    opt = torch.optim.Adam([ref_p], lr=0.03, betas=(0.9, 0.999), eps=1e-8)
    gg = torch.Generator().manual_seed(4)
    for it in range(25):
        zz, yy = torch.randn(16, 20, generator=gg), torch.randint(0, 20, (16,), generator=gg)
        loss = torch.func.functional_call(lf, {'positions': ref_p}, (zz, yy))
        opt.zero_grad(); loss.backward(); opt.step()
        lf(zz, yy).backward()
        close(lf.positions.detach(), ref_p.detach(), eps=1e-5)
        assert lf.positions.grad is None
    eq(int(lf.n_steps), 25)
    # non-finite gradient: step skipped, moments unchanged
    state = {k: v.clone() for k, v in lf.state_dict().items()}
    lf.positions.grad = torch.full((20,), float('inf')); lf._step_positions(lf.positions)
    for k, v in lf.state_dict().items(): eq(v, state[k])
    lf.positions.grad = torch.ones(20); lf.positions.grad[3] = float('nan'); lf._step_positions(lf.positions)
    for k, v in lf.state_dict().items(): eq(v, state[k])
    # the fallback used where torch has no fused Adam kernel gives the same steps and the same skipping
    f1, f2 = DySWRMLoss(torch.arange(20, 0, -1), window=5, lr=0.03), DySWRMLoss(torch.arange(20, 0, -1), window=5, lr=0.03)
    for it in range(10):
        gr = torch.randn(20, generator=gg) if it != 4 else torch.full((20,), float('nan'))
        f1.positions.grad = gr.clone(); f1._step_positions(f1.positions)
        f2._masked_adam(f2.positions.data, gr.clone(), (~torch.isfinite(gr).all()).float())
        close(f1.positions.detach(), f2.positions.detach(), eps=1e-5); eq(f1.n_steps, f2.n_steps)
    eq(int(f1.n_steps), 9)
    # through `_step_positions`: a device whose fused kernel raises falls back to the same steps, and is tried only once
    _kernel, calls = torch._fused_adam_, []
    def _no_kernel(*args, **kwargs): calls.append(1); raise NotImplementedError("no fused kernel")
    torch._fused_adam_ = _no_kernel
    try:
        f3 = DySWRMLoss(torch.arange(20, 0, -1), window=5, lr=0.03)
        f4 = DySWRMLoss(torch.arange(20, 0, -1), window=5, lr=0.03)
        for it in range(5):
            gr = torch.randn(20, generator=gg)
            f3.positions.grad = gr.clone(); f3._step_positions(f3.positions)
            f4._masked_adam(f4.positions.data, gr.clone(), torch.zeros(()))
            close(f3.positions.detach(), f4.positions.detach(), eps=1e-6); assert f3.positions.grad is None
        eq(len(calls), 1); eq(f3.__dict__['_no_fused'], 'cpu')
    finally: torch._fused_adam_ = _kernel
    # a scaled gradient (fp16 GradScaler) gives the same first step: Adam is scale-invariant
    a, b = DySWRMLoss(torch.arange(20, 0, -1), window=5), DySWRMLoss(torch.arange(20, 0, -1), window=5)
    zz, yy = torch.randn(16, 20), torch.randint(0, 20, (16,))
    a(zz, yy).backward(); (b(zz, yy) * 2.**16).backward()
    close(a.positions.detach(), b.positions.detach(), eps=1e-5)


def test_baselines_reference():
    "CB, focal-CB, LDAM, LA and Balanced Softmax equal their reference formulas; their refusals"
    # each baseline equals its reference formula written out here
    g = torch.Generator().manual_seed(7)
    for C, B in [(4, 16), (10, 50), (30, 90)]:
        cnt = torch.randint(1, 2000, (C,), generator=g); n = cnt.double()
        z_ = torch.randn(B, C, generator=g, dtype=torch.float64)
        y_ = torch.cat([torch.arange(C), torch.randint(0, C, (B - C,), generator=g)])
        wcb = torch.tensor([(1 - .9999) / (1 - .9999 ** float(v)) for v in n], dtype=torch.float64); wcb = wcb * C / wcb.sum()
        mld = torch.tensor([.5 * (float(n.min()) / float(v)) ** .25 for v in n], dtype=torch.float64)
        prior = n / n.sum()
        cases = [(ClassBalancedLoss(cnt), dict(w=wcb)),
                 (ClassBalancedLoss(cnt, gamma=2.), dict(w=wcb, gamma=2.)),
                 (ClassBalancedLoss(cnt, beta=.99, gamma=1.), dict(w=torch.tensor([(1 - .99) / (1 - .99 ** float(v)) for v in n]) * C / torch.tensor([(1 - .99) / (1 - .99 ** float(v)) for v in n]).sum(), gamma=1.)),
                 (LDAMLoss(cnt), dict(m=-mld, s=30.)),
                 (LDAMLoss(cnt, max_m=.3, s=10., weight=wcb), dict(m=-mld * .6, s=10., w=wcb)),
                 (LogitAdjustedLoss(cnt), dict(o=prior.log())),
                 (LogitAdjustedLoss(cnt, tau=.5), dict(o=.5 * prior.log())),
                 (BalancedSoftmaxLoss(cnt), dict(o=n.log()))]
        for lf, kw in cases:
            zin = z_ if 's' not in kw else torch.tanh(z_)  # cosine-like logits for LDAM
            ref = ref_loss(zin, y_, **kw)
            mean = ref.sum() / kw['w'][y_].sum() if 'w' in kw and lf.reduction == 'weighted_mean' else ref.mean()
            close(lf(zin, y_), mean, eps=1e-5 * ref.abs().max())  # buffers are float32: relative tolerance; LDAM: PyTorch's weighted mean
            lf.reduction = 'none'; close(lf(zin, y_), ref, eps=1e-5 * ref.abs().max())
    close(cb_weights(cnt).sum(), C, eps=1e-4); close(cb_weights(cnt, 0.), torch.ones(C))
    refused(lambda: cb_weights([3, 2], beta=1.), contains="beta")
    close(posthoc_adjust(z_, cnt), z_ - prior.log(), eps=1e-6)
    # balanced softmax == logit adjustment with tau = 1 (a constant shift of every logit)
    close(BalancedSoftmaxLoss(cnt)(z_, y_), LogitAdjustedLoss(cnt)(z_, y_), eps=1e-5)
    for bad in (lambda: ClassBalancedLoss([3, 0, 1]), lambda: LDAMLoss([3, 0, 1]), lambda: LogitAdjustedLoss([3, 0, 1]),
                lambda: BalancedSoftmaxLoss([3, 0, 1])):
        refused(bad, contains="class 1 has training count 0")
    refused(lambda: posthoc_adjust(torch.randn(2, 4), [3, 2, 1]), contains="4 classes")


def test_reweighted_pickled_low_precision():
    "reweighted copies, pickle/cloudpickle/swrm_state round trips, DySWRM after unpickling, fp16/bf16 logits"
    torch.manual_seed(0)
    cnt = torch.tensor([400, 200, 100, 50, 20, 10])
    w_new = torch.tensor([1., 2., 3., 4., 5., 6.])
    zz, yy = torch.randn(12, 6, dtype=torch.float64), torch.arange(12) % 6
    sw6 = SimilarityWindow(cnt, torch.randn(6, generator=torch.Generator().manual_seed(8)), 3)
    losses = [MarginCELoss(6), SWRMLoss.from_window(sw6), SWRLoss.from_window(sw6), SWMLoss.from_window(sw6), DySWRMLoss(cnt, 3),
              ClassBalancedLoss(cnt, gamma=1.), LDAMLoss(cnt), LogitAdjustedLoss(cnt), BalancedSoftmaxLoss(cnt)]
    for lf in losses:
        old_w = lf.class_weights.clone()
        lr_ = lf.reweighted(w_new)
        eq(type(lr_), type(lf)); eq(lr_.class_weights, w_new); eq(lf.class_weights, old_w)
        close(lr_.class_margins, lf.class_margins)
        # reweighted = same loss with per-sample weight w_y / old weight ... checked against margin_ce directly
        w, m, o = lf.class_terms()
        close(lr_(zz, yy), margin_ce(zz, yy, w_new, m, o, lf.scale, lf.gamma), eps=1e-6)
        refused(lambda: lf.reweighted(torch.ones(5)), contains="6 classes")
        # pickle and cloudpickle round trips give the same loss values
        for pk in (pickle, cloudpickle):
            lf2 = pk.loads(pk.dumps(lf))
            eq(type(lf2), type(lf)); close(lf2(zz, yy), lf(zz, yy))
            lf.reduction = 'none'; lf2.reduction = 'none'; close(lf2(zz, yy), lf(zz, yy)); lf.reduction = 'mean'
        # and so does the weights_only-safe state used by Learner.save
        lf3 = MarginCELoss.from_swrm_state(lf.swrm_state())
        eq(type(lf3), type(lf)); close(lf3(zz, yy), lf(zz, yy))
    # DySWRM after unpickling: the hook is back (exactly once) and keeps its Adam state
    lf = DySWRMLoss(cnt, 3)
    for _ in range(3): lf(torch.randn(8, 6), torch.arange(8) % 6).backward()
    lf2 = pickle.loads(pickle.dumps(lf))
    eq(lf2.n_steps, lf.n_steps); eq(lf2.exp_avg_sq, lf.exp_avg_sq)
    zz1, yy1 = torch.randn(8, 6), torch.arange(8) % 6
    lf(zz1, yy1).backward(); lf2(zz1, yy1).backward()
    eq(int(lf2.n_steps), 4); close(lf2.positions.detach(), lf.positions.detach())
    # a DySWRM reweighted copy uses the fixed weights and has its own positions and hook
    lr_ = lf.reweighted(w_new); eq(lr_.positions.detach(), lf.positions.detach())
    lr_(zz1, yy1).backward(); assert not torch.equal(lr_.positions.detach(), lf.positions.detach())
    eq(int(lf.n_steps), 4)

    # low-precision logits: a finite float32 loss, equal to the float32 computation on the same values
    for lf in [SWRMLoss.from_window(sw6), DySWRMLoss(cnt, 3), LDAMLoss(cnt), ClassBalancedLoss(cnt, gamma=2.)]:
        for dt in (torch.float16, torch.bfloat16):
            zl = (torch.randn(12, 6) * 4).to(dt).requires_grad_()
            out = lf(zl, yy)
            eq(out.dtype, torch.float32); assert torch.isfinite(out)
            close(out, lf(zl.detach().float(), yy), eps=1e-5)
            out.backward(); eq(zl.grad.dtype, dt); assert torch.isfinite(zl.grad).all()
    # buffers follow the logits (here: dtype through .double(); device in the cuda cell)
    eq(DySWRMLoss(cnt, 3).double()(zz, yy).dtype, torch.float64)
