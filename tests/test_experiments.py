"""The experimental losses of swrm_fastai.experiments against formulas written out here (tests/_reference.py): the
pairwise window margins, PairwiseWindowLoss, TemperedWindowLoss, DyPairwiseWindowLoss (value, gradients, the ascending
step, persistence) and their refusals. Each test seeds its own draws."""
import pickle
import torch
import torch.nn.functional as F
from fastcore.test import test_eq as eq, test_close as close, test_fail as refused
from swrm_fastai.similarity import SimilarityWindow, window_index
from swrm_fastai.losses import MarginCELoss, LogitAdjustedLoss, SWRLoss, margin_ce
from swrm_fastai.experiments import (PairOffsets, window_pair_margins, PairwiseWindowLoss, TemperedWindowLoss,
                                     DyPairwiseWindowLoss)
from _reference import ref_loss, ref_pairs


def lesson_window():
    "The notebook's six classes on a line, a window of three"
    return SimilarityWindow(torch.tensor([500, 300, 100, 40, 10, 5]), torch.tensor([0., .1, 2., 2.2, .15, 5.]), window=3)


def test_pairwise_window_loss():
    "the pairwise margins equal the loop over classes and window members; the loss is CE on LA + kappa P; gradchecks; refusals; persistence"
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    n = torch.randint(1, 500, (9,), generator=g).double(); p = torch.randn(9, generator=g, dtype=torch.float64)
    P = ref_pairs(n, SimilarityWindow(n, p, 4).members, p, tau=.7)
    close(window_pair_margins(n, p, window_index(p, 4), tau=.7), P, eps=1e-10)
    lf = PairwiseWindowLoss(n, p, window=4, kappa=2., tau=.7, la_tau=.5)
    z, y = torch.randn(16, 9, generator=g), torch.randint(0, 9, (16,), generator=g)
    off = .5 * torch.log(n / n.sum())[None] + 2. * P
    close(lf(z, y), F.cross_entropy(z.double() + off[y], y), eps=1e-5)
    close(PairwiseWindowLoss(n, p, window=4, kappa=0.)(z, y), LogitAdjustedLoss(n)(z, y), eps=1e-6)
    # gradcheck of the pairwise offsets (logits and offsets) and of the margins in the positions
    zz = torch.randn(6, 5, dtype=torch.float64, requires_grad=True); yy = torch.tensor([0, 1, 2, 3, 4, 0])
    oo = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    class _Pair(PairOffsets, MarginCELoss):
        def pair_offsets(self): return oo
    for red in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(lambda z, o: _Pair(5, reduction=red)(z, yy), (zz, oo))
    pp = torch.randn(7, dtype=torch.float64, requires_grad=True); nn7 = torch.arange(7, 0, -1).double() * 10
    assert torch.autograd.gradcheck(lambda p: window_pair_margins(nn7, p, window_index(p.detach(), 3)), (pp,))
    # bad input
    refused(lambda: PairwiseWindowLoss(n, p, window=4, kappa=-1.), contains='kappa')
    refused(lambda: PairwiseWindowLoss(n, p[:5], window=4), contains='position')
    refused(lambda: PairwiseWindowLoss(n, p, window=20), contains='window')
    refused(lambda: PairwiseWindowLoss(n, p, window=4, la_tau=float('nan')), contains='la_tau')
    refused(lambda: margin_ce(z, y, class_offset=torch.zeros(9, 8)), contains='class_offset')
    refused(lambda: lf(z, torch.full((16,), 9)), contains='target')
    refused(lambda: lf(torch.randn(4, 8), torch.tensor([0, 1, 2, 3])), contains='9 classes')
    # persistence: rebuilt from its state, same loss
    lf2 = MarginCELoss.from_swrm_state(lf.swrm_state()); close(lf2(z, y), lf(z, y))


def test_tempered_window_loss():
    "TemperedWindowLoss is LA + Eq. 3 margins + SWR weights to the power rho, mean 1; its special cases; gradcheck; refusals"
    sw = lesson_window(); tw = TemperedWindowLoss.from_window(sw)
    close(tw.class_weights.mean(), 1., eps=1e-6); eq(tw.class_weights.argsort(), sw.weights.argsort())
    close(tw.class_margins, sw.margins)
    # against the formula written out in float64
    g = torch.Generator().manual_seed(11)
    n = torch.randint(1, 800, (12,), generator=g).double(); p = torch.randn(12, generator=g, dtype=torch.float64)
    sw12 = SimilarityWindow(n, p, 5, beta=.8, tau=.6)
    w_ref = sw12.weights.double() ** .3; w_ref = w_ref * 12 / w_ref.sum()
    z, y = torch.randn(30, 12, generator=g, dtype=torch.float64), torch.cat([torch.arange(12), torch.randint(0, 12, (18,), generator=g)])
    lf = TemperedWindowLoss.from_window(sw12, power=.3, la_tau=.5)
    ref = ref_loss(z, y, w=w_ref, m=sw12.margins.double(), o=.5 * torch.log(n / n.sum()))
    close(lf(z, y), ref.mean(), eps=1e-5)
    close(TemperedWindowLoss(n, p, 5, power=0., beta=0.)(z, y), LogitAdjustedLoss(n)(z, y), eps=1e-6)  # rho = 0, beta = 0: LA
    close(TemperedWindowLoss(n, p, 5, power=1., beta=0., la_tau=0., tau=.6)(z, y),
               SWRLoss(SimilarityWindow(n, p, 5).weights * 12 / SimilarityWindow(n, p, 5).weights.sum())(z, y), eps=1e-6)
    eq(lf.as_window().members, sw12.members)
    # gradcheck in the logits (float64 through the module)
    lf64 = lf.double(); zg = z[:8].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: lf64(x, y[:8]), (zg,))
    # bad input
    refused(lambda: TemperedWindowLoss(n, p, 5, power=-1.), contains="power")
    refused(lambda: TemperedWindowLoss(n, p, 5, la_tau=float('nan')), contains="la_tau")
    refused(lambda: TemperedWindowLoss(n, p, 13), contains="window size")
    refused(lambda: TemperedWindowLoss(n, p[:5], 3), contains="different lengths")
    refused(lambda: TemperedWindowLoss(n, p, 5, beta=-1.), contains="beta")


def test_dy_pairwise_window_loss():
    "DyPairwiseWindowLoss equals PairwiseWindowLoss on its current positions; gradcheck; ascending step; persistence; refusals"
    # the loss equals PairwiseWindowLoss on the current positions (value and logit gradient), and its float64 gradcheck
    g = torch.Generator().manual_seed(12)
    n = torch.randint(1, 500, (9,), generator=g).double()
    lf = DyPairwiseWindowLoss(n, window=4, kappa=2., tau=.7, la_tau=.5, seed=5)
    z, y = torch.randn(16, 9, generator=g, dtype=torch.float64), torch.randint(0, 9, (16,), generator=g)
    ref = PairwiseWindowLoss(n, lf.positions.detach(), window=4, kappa=2., tau=.7, la_tau=.5)
    close(lf(z, y), ref(z, y), eps=1e-5)
    eq(lf.as_window().members, ref.as_window().members)
    lf64 = lf.double(); zg = z[:8].clone().requires_grad_(); pg = lf64.positions.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, p: torch.func.functional_call(lf64, {'positions': p}, (x, y[:8])), (zg, pg))
    # ascend: the Adam step on the negated gradient (as the fallback's step on -g)
    a, b = DyPairwiseWindowLoss(n, window=4, seed=1), DyPairwiseWindowLoss(n, window=4, seed=1, ascend=True)
    gr = torch.randn(9, generator=g)
    a.positions.grad = gr.clone(); a._step_positions(a.positions); b.positions.grad = gr.clone(); b._step_positions(b.positions)
    close(a.positions.detach() - DyPairwiseWindowLoss(n, window=4, seed=1).positions.detach(),
               DyPairwiseWindowLoss(n, window=4, seed=1).positions.detach() - b.positions.detach(), eps=1e-6)
    c = DyPairwiseWindowLoss(n, window=4, seed=1, ascend=True); c._masked_adam(c.positions.data, -gr.clone(), torch.zeros(()))
    close(c.positions.detach(), b.positions.detach(), eps=1e-6)
    # persistence keeps the vector, its Adam state and the direction
    b2 = MarginCELoss.from_swrm_state(b.swrm_state()); eq(b2.positions.detach(), b.positions.detach()); eq(b2.ascend, True)
    b3 = pickle.loads(pickle.dumps(b)); eq(b3.n_steps, b.n_steps); eq(b3.ascend, True)
    # bad input
    refused(lambda: DyPairwiseWindowLoss(n, window=10), contains="window size")
    refused(lambda: DyPairwiseWindowLoss(n, window=4, kappa=-1.), contains="kappa")
    refused(lambda: DyPairwiseWindowLoss(n, window=4, lr=float('inf')), contains="lr")
    refused(lambda: DyPairwiseWindowLoss([5, 0, 3], window=2), contains="class 1 has training count 0")
