"""Each baseline against its reference semantics, written out here in float64 (not the other projects' code):
LDAM with and without DRW weights (Cao et al.: PyTorch's weighted cross-entropy), class-balanced softmax (Cui et al.:
the weighted losses averaged over the batch), logit adjustment (Menon et al.) and balanced softmax (Ren et al.), on
long-tailed batches drawn with CIFAR-100-LT's profile; loss and gradient."""
import math
import numpy as np, pytest, torch
from swrm_fastai.losses import LDAMLoss, ClassBalancedLoss, LogitAdjustedLoss, BalancedSoftmaxLoss, SWRMLoss, margin_ce
from swrm_fastai.similarity import SimilarityWindow
from swrm_fastai.callback import DeferredReweighting

C, B = 100, 128
COUNTS = [math.floor(500 * 100 ** (-c / (C - 1))) for c in range(C)]  # CIFAR-100-LT, imbalance 100

def lt_batch(seed=0, scale=1.):
    "Logits and targets of a batch drawn from the long-tailed training distribution"
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor(COUNTS, dtype=torch.float64); p = p / p.sum()
    y = torch.multinomial(p, B, replacement=True, generator=g)
    z = (torch.randn(B, C, generator=g, dtype=torch.float64) * scale).requires_grad_()
    return z, y

def ref_ldam_margins(counts, max_m=0.5):
    "Cao et al.: m = 1 / n^(1/4), rescaled so that the largest is max_m"
    m = 1. / np.sqrt(np.sqrt(np.asarray(counts, dtype=np.float64)))
    return torch.tensor(m * (max_m / m.max()))

def ref_cb_weights(counts, beta=0.9999):
    "Cui et al.: (1 - beta) / (1 - beta^n), normalised to sum to the number of classes"
    n = np.asarray(counts, dtype=np.float64)
    w = (1. - beta) / (1. - np.power(beta, n))
    return torch.tensor(w / w.sum() * len(n))

def ce_rows(logits, y):
    "-log softmax(logits)[y], row by row"
    return -(logits - logits.logsumexp(1, keepdim=True)).gather(1, y[:, None]).squeeze(1)

def weighted_mean(l, w_y): return (w_y * l).sum() / w_y.sum()  # PyTorch's F.cross_entropy(weight=w) reduction

def check(ours, ref, z):
    "Same value and same gradient with respect to the logits"
    g1, = torch.autograd.grad(ours, z, retain_graph=True); g2, = torch.autograd.grad(ref, z, retain_graph=True)
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-10)

def ldam_logits(z, y, s=30., max_m=0.5):
    m = ref_ldam_margins(COUNTS, max_m)
    return s * (z - torch.zeros_like(z).scatter(1, y[:, None], m[y][:, None]))

@pytest.mark.parametrize('seed', [0, 1])
def test_ldam_without_weights(seed):
    z, y = lt_batch(seed, 1 / 30)  # cosine-range logits, as LDAM's normalised head gives
    check(LDAMLoss(COUNTS)(z, y), ce_rows(ldam_logits(z, y), y).mean(), z)

@pytest.mark.parametrize('seed', [0, 1])
def test_ldam_drw_weighted_mean(seed):
    "With DRW's weights, LDAM divides by the sum of the batch's target weights (F.cross_entropy(s*out, y, weight=w))"
    z, y = lt_batch(seed, 1 / 30)
    w = ref_cb_weights(COUNTS)
    ref = weighted_mean(ce_rows(ldam_logits(z, y), y), w[y])
    check(LDAMLoss(COUNTS, weight=w)(z, y), ref, z)  # with weights, the default is the authors' weighted mean
    # the batch-size convention is available by name, and differs by B / sum of the target weights (several times here)
    ours_b = LDAMLoss(COUNTS, weight=w, reduction='mean')(z, y)
    check(ours_b, (w[y] * ce_rows(ldam_logits(z, y), y)).mean(), z)
    assert (B / w[y].sum()).item() > 2

def test_drw_callback_builds_the_reference_loss():
    "DeferredReweighting's stage-2 loss on LDAM is the weighted-mean LDAM with class-balanced weights"
    class FakeLearn: loss_func = LDAMLoss(COUNTS)
    cb = DeferredReweighting(1); cb.learn = FakeLearn(); cb._data_counts = torch.tensor(COUNTS)
    lf = cb.make_loss()
    z, y = lt_batch(3, 1 / 30)
    check(lf(z, y), weighted_mean(ce_rows(ldam_logits(z, y), y), ref_cb_weights(COUNTS)[y]), z)
    cb_b = DeferredReweighting(1, reduction='mean'); cb_b.learn = FakeLearn(); cb_b._data_counts = torch.tensor(COUNTS)
    assert cb_b.make_loss().reduction == 'mean'
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'weighted_mean'"): DeferredReweighting(1, reduction='sum')
    assert LDAMLoss(COUNTS).reduction == 'mean' and LDAMLoss(COUNTS, weight=ref_cb_weights(COUNTS)).reduction == 'weighted_mean'

def test_drw_refuses_mixup_with_the_weighted_mean():
    "fastai's MixUp reduces the per-sample losses with 'mean' or 'sum' only: refused before the first batch, with the fix"
    from fastai.callback.mixup import MixUp
    from swrm_fastai.test_utils import blobs_learner
    learn = blobs_learner(loss_func=LDAMLoss([300, 200, 150, 40, 12, 5]), cbs=[DeferredReweighting(1), MixUp()])
    with pytest.raises(ValueError, match=r"MixUp averages the per-sample losses itself .*reduction='mean'"):
        with learn.no_bar(), learn.no_logging(): learn.fit(2)
    learn = blobs_learner(loss_func=LDAMLoss([300, 200, 150, 40, 12, 5]), cbs=[DeferredReweighting(1, reduction='mean', verbose=False), MixUp()])
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    assert learn.loss_func.reduction == 'mean' and learn.loss_func.weight is not None

@pytest.mark.parametrize('gamma', [0., 2.])
def test_class_balanced(gamma):
    "Cui et al.: class-balanced weights times the (focal) loss, averaged over the batch's samples"
    z, y = lt_batch(2)
    w = ref_cb_weights(COUNTS)
    l = ce_rows(z, y)
    if gamma: l = (1 - torch.exp(-l)) ** gamma * l
    check(ClassBalancedLoss(COUNTS, gamma=gamma)(z, y), (w[y] * l).mean(), z)
    # the PyTorch convention is there too, by name
    check(ClassBalancedLoss(COUNTS, gamma=gamma, reduction='weighted_mean')(z, y), weighted_mean(l, w[y]), z)

@pytest.mark.parametrize('tau', [1., 0.5])
def test_logit_adjustment(tau):
    "Menon et al.: cross-entropy of z + tau * log(prior)"
    z, y = lt_batch(4)
    prior = torch.tensor(COUNTS, dtype=torch.float64); prior = prior / prior.sum()
    check(LogitAdjustedLoss(COUNTS, tau=tau)(z, y), ce_rows(z + tau * prior.log(), y).mean(), z)

def test_balanced_softmax():
    "Ren et al.: cross-entropy of z + log(n)"
    z, y = lt_batch(5)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    check(BalancedSoftmaxLoss(COUNTS)(z, y), ce_rows(z + n.log(), y).mean(), z)

def test_swrm_keeps_the_batch_mean():
    "SWRM is Eq. 4 as written: (1/B) sum of w_y * CE with the margin; its weighted mean is available by name"
    z, y = lt_batch(6)
    sw = SimilarityWindow(COUNTS, torch.randn(C, generator=torch.Generator().manual_seed(0)), window=15)
    w, m = sw.weights.double(), sw.margins.double()
    l = ce_rows(z + torch.zeros_like(z).scatter(1, y[:, None], m[y][:, None]), y)
    lf = SWRMLoss.from_window(sw)
    assert lf.reduction == 'mean'
    check(lf(z, y), (w[y] * l).mean(), z)
    lf.reduction = 'weighted_mean'
    check(lf(z, y), weighted_mean(l, w[y]), z)

def test_weighted_mean_gradient_in_the_weights():
    "gradcheck of 'weighted_mean' in the logits and in the class weights (the denominator depends on them)"
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 4, dtype=torch.float64, generator=g).requires_grad_()
    w = (torch.rand(4, dtype=torch.float64, generator=g) + .2).requires_grad_()
    y = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    assert torch.autograd.gradcheck(lambda z_, w_: margin_ce(z_, y, w_, reduction='weighted_mean'), (z, w))
    m = (torch.rand(4, dtype=torch.float64, generator=g) * .5).requires_grad_()
    assert torch.autograd.gradcheck(lambda z_, w_, m_: margin_ce(z_, y, w_, m_, reduction='weighted_mean'), (z, w, m))
