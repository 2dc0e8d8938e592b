"""swrm_fastai.similarity against the paper's formulas written out by hand (tests/_reference.py): SWR weights (Eq. 2),
SWM margins (Eq. 3) and their gradient, `SimilarityWindow` and its repr/help, look-alike shares against the exact
chance; and each refusal. The worked example is the notebook's: C = 5, W = 3, positions p5, counts n5."""
import itertools, math, pydoc
import numpy as np, torch
from fastcore.test import test_eq as eq, test_close as close, test_fail as refused
from fastcore.docments import MarkdownRenderer
from swrm_fastai.core import document_params
from swrm_fastai.similarity import (window_members, window_margins, swr_weights, swm_margins, embed_1d, SimilarityWindow,
                                    lookalike_pairs, lookalike_share, window_chance)
from _reference import ref_weight, ref_margin, autograd_margins

p5 = torch.tensor([0., 3., 1., 4., 2.])
n5 = torch.tensor([100., 50., 20., 10., 5.])
n5l, p5l = n5.tolist(), p5.tolist()
WINS = [[0, 2, 4], [4, 1, 3], [0, 2, 4], [4, 1, 3], [2, 4, 1]]  # window_members(p5, 3), worked out by hand
NAMES5 = ['head', 'mid', 'rare', 'rarer', 'rarest']


def grouped_prototypes(n_groups=20, group=5, dim=32, spread=0.05, seed=0):
    "Prototypes of `n_groups * group` classes, in tight groups around random centres (the notebook's lesson)"
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_groups, dim, generator=g)
    return (centres.repeat_interleave(group, 0) + spread * torch.randn(n_groups * group, dim, generator=g))


def test_swr_weights_reference():
    close(swr_weights(n5, p5, 3), torch.tensor([ref_weight(n5l, WINS[c], c) for c in range(5)]), eps=1e-6)
    close(swr_weights(n5, p5, 3), torch.tensor([math.log(1 + 125/300), math.log(1 + 2*65/150), math.log(1 + 5*125/60), math.log(1 + 10*65/30), math.log(101)]), eps=1e-5)
    # edge windows (first and last class on the line) and W=2, W=C
    wins2 = [[0, 2], [4, 1], [0, 2], [1, 3], [2, 4]]
    close(swr_weights(n5, p5, 2), torch.tensor([ref_weight(n5l, wins2[c], c) for c in range(5)]), eps=1e-6)
    close(swr_weights(n5, p5, 5), torch.tensor([ref_weight(n5l, range(5), c) for c in range(5)]), eps=1e-6)
    # equal counts: every weight is ln 2, whatever the positions and window
    close(swr_weights([7] * 6, torch.randn(6, generator=torch.Generator().manual_seed(0)), 4), torch.full((6,), math.log(2)), eps=1e-6)
    # normalised weights have mean 1 and the same ratios
    w, wn = swr_weights(n5, p5, 3), swr_weights(n5, p5, 3, normalize=True)
    close(wn.mean(), 1.); close(wn / wn[0], w / w[0])


def test_swr_weights_refused():
    refused(lambda: swr_weights([1, 2, 0, 4, 5], p5, 3), contains="class 2 has training count 0")
    refused(lambda: swr_weights([1, 2, 3], p5, 3), contains="counts has 3 entries but there are 5 classes")
    refused(lambda: swr_weights(n5, p5, 6), contains="2..C")


def test_swm_margins_reference():
    close(swm_margins(p5, 3), torch.tensor([ref_margin(p5l, WINS[c], c) for c in range(5)]), eps=1e-6)
    close(swm_margins(p5, 3)[4], math.log((2 * math.exp(1 / math.sqrt(2)) + 1) / 3), eps=1e-6)
    close(swm_margins(p5, 3)[0], math.log((1 + math.exp(1 / math.sqrt(2)) + math.exp(math.sqrt(2))) / 3), eps=1e-6)
    for W, b, t in ((2, 1., 1.), (5, 2., 0.5), (3, 0.5, 2.)):
        mem = window_members(p5, W).tolist()
        close(swm_margins(p5, W, beta=b, tau=t), torch.tensor([ref_margin(p5l, mem[c], c, b, t) for c in range(5)]), eps=1e-5)
    # beta = 0: all margins are 0; equal positions: all similarities 1, all margins 0
    eq(swm_margins(p5, 3, beta=0.), torch.zeros(5))
    eq(swm_margins(torch.ones(5), 3, beta=2.), torch.zeros(5))
    # margins are >= 0, bounded by 2 beta sqrt(C-1) / tau, invariant to shifting and scaling the line
    pr = torch.randn(100, generator=torch.Generator().manual_seed(1)) * 50
    mr = swm_margins(pr, 15, beta=3.)
    assert (mr >= 0).all() and (mr <= 2 * 3 * math.sqrt(99)).all()
    close(swm_margins(pr * 7 + 3, 15, beta=3.), mr, eps=1e-4)


def test_swm_margins_gradient():
    g = torch.Generator().manual_seed(0)
    # differentiable in positions (float64 gradcheck), finite gradient even when every position is equal
    pg = torch.randn(6, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: window_margins(x, window_members(pg.detach(), 3), 1.5, 0.7), (pg,))
    # the closed-form gradient equals autograd through the plain formula (C = 200, W = 15)
    pa = torch.randn(200, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    mem = window_members(pa, 15); gout = torch.randn(200, dtype=torch.float64, generator=g)
    p1, p2 = pa.clone().requires_grad_(), pa.clone().requires_grad_()
    (window_margins(p1, mem, 2., .5) * gout).sum().backward(); (autograd_margins(p2, mem, 2., .5) * gout).sum().backward()
    close(window_margins(pa, mem, 2., .5), autograd_margins(pa, mem, 2., .5), eps=1e-12)
    close(p1.grad, p2.grad, eps=1e-10)
    pe = torch.ones(5, requires_grad=True); swm_margins(pe, 3).sum().backward(); assert torch.isfinite(pe.grad).all()


def test_swm_margins_refused():
    refused(lambda: swm_margins(p5, 3, beta=-1.), contains="beta")
    refused(lambda: swm_margins(p5, 3, tau=0.), contains="tau")
    refused(lambda: swm_margins(torch.tensor([0., float('nan'), 1.]), 2), contains="non-finite")


def test_similarity_window():
    sw = SimilarityWindow(n5, p5, window=3, names=NAMES5)
    close(SimilarityWindow(n5, p5, 3, normalize=True).weights.mean(), 1.)
    refused(lambda: SimilarityWindow(n5, p5, 3, names=['a']), contains="1 names given for 5 classes")
    refused(lambda: SimilarityWindow(n5[:4], p5, 3), contains="counts has 4 entries but there are 5 classes")
    refused(lambda: SimilarityWindow([1, 2, 3, 0, 5], p5, 3, names=list('abcde')), contains="class 3 ('d')")
    refused(lambda: SimilarityWindow(n5, p5, 3, beta=-1), contains="beta")
    swp = SimilarityWindow.from_prototypes(grouped_prototypes(4, 5, seed=2), torch.arange(20, 0, -1), window=5, seed=0)
    eq(swp.positions, embed_1d(grouped_prototypes(4, 5, seed=2), seed=0))
    assert 'C=20' in repr(swp)
    # the line is shown whole up to C = 20 (wrapped), then the first and last 8 with the number left out
    eq(sw.line(), 'head < rare < rarest < mid < rarer')
    assert 'line (left to right): head < rare < rarest < mid < rarer' in repr(sw)
    assert 'min 0.348 (head)' in repr(sw) and 'max 4.615 (rarest)' in repr(sw)
    eq(len(swp.line().split(' < ')), 20); assert '...' not in repr(swp)
    sw60 = SimilarityWindow(torch.arange(60, 0, -1), torch.arange(60.), 5, names=[f'class_{i}' for i in range(60)])
    eq(sw60.line(), ' < '.join(f'class_{i}' for i in range(8)) + ' < ... 44 more ... < ' + ' < '.join(f'class_{i}' for i in range(52, 60)))
    assert all(len(l) <= 110 for l in repr(sw60).splitlines()), repr(sw60)


def test_similarity_window_help():
    "help() shows every parameter, from the inline comments"
    h = pydoc.render_doc(SimilarityWindow, renderer=pydoc.plaintext)
    assert 'Parameters' in h and 'window : int, default 15' in h and 'window size W, 2 <= W <= C' in h, h
    assert 'names : default None' in h and 'counts\n' in SimilarityWindow.__init__.__doc__
    assert 'Parameters' not in MarkdownRenderer(SimilarityWindow)._repr_markdown_()  # the docs page keeps its own table
    refused(lambda: document_params(type('NoInit', (SimilarityWindow,), {})), contains='does not define its own __init__')


def test_lookalike_share():
    sw = SimilarityWindow(n5, p5, window=3, names=NAMES5)
    # a group of 3 is 3 pairs: head-rarest share {0, 2, 4}, rarest-mid share {2, 4, 1}; head and mid are three apart
    eq(lookalike_pairs([('head', 'rarest', 'mid')], 5, sw.names), [(0, 1), (0, 4), (1, 4)])
    eq(lookalike_share(sw, [('head', 'rarest', 'mid')])['shared'], 2)
    eq(lookalike_pairs([(1, 0), (0, 1, 1)], 5), [(0, 1)])                     # pairs counted once


def test_window_chance():
    # chance: exact over all 120 lines of 5 classes, for every pair; closed form at the ends
    shares = [lookalike_share(window_members(torch.tensor(p, dtype=torch.float), 3), [(0, 1)])['share'] for p in itertools.permutations(range(5))]
    close(sum(shares) / len(shares), window_chance(5, 3))
    close(window_chance(7, 7), 1.); close(window_chance(10, 2), 2 / 10); close(window_chance(100, 15), 14 * 185 / 9900)
    # and by a seeded Monte Carlo for C = 100, W = 15, 25 pairs
    g = torch.Generator().manual_seed(0)
    mc = np.mean([lookalike_share(window_members(torch.randperm(100, generator=g).float(), 15), [(2*i, 2*i+1) for i in range(25)])['share'] for _ in range(400)])
    close(mc, window_chance(100, 15), eps=0.01)


def test_lookalike_share_refused():
    sw = SimilarityWindow(n5, p5, window=3, names=NAMES5)
    refused(lambda: lookalike_share(sw, [('head', 'nobody')]), contains="'nobody' is not one of the class names")
    refused(lambda: lookalike_share(sw.members, [('head', 'mid')]), contains="no class names were given")
    refused(lambda: lookalike_share(sw, [(0, 5)]), contains="class index in 0..4")
    refused(lambda: lookalike_share(sw, [(0,)]), contains="needs at least 2 distinct classes")
    refused(lambda: lookalike_share(sw, []), contains="no look-alike group")
    refused(lambda: lookalike_share(torch.rand(5, 3, generator=torch.Generator().manual_seed(0)), [(0, 1)]), contains="integer [C, W] tensor")
    refused(lambda: lookalike_share(sw.members + 5, [(0, 1)]), contains="class indices in 0..4")
    refused(lambda: lookalike_share(sw.members, [(0, 1)], names=list('ab')), contains="2 names given for 5 classes")
