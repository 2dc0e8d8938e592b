"The fastai patches and the counts helpers beyond the notebooks' lessons: save/load round trips, class_counts on fastai data"
import tempfile, warnings
import numpy as np, pandas as pd, torch, torch.nn as nn, pytest
from fastcore.test import test_eq as eq, test_fail as refused, test_is as same
from torch.utils.data import TensorDataset
from fastai.learner import Learner
from fastai.data.core import DataLoaders, Datasets
from fastai.data.load import DataLoader
from fastai.data.transforms import Categorize, MultiCategorize, OneHotEncode, RegressionSetup
import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
from swrm_fastai.similarity import SimilarityWindow
from swrm_fastai.losses import DySWRMLoss, SWRMLoss, ClassBalancedLoss, MarginCELoss
from swrm_fastai.core import class_counts, class_index
from swrm_fastai.patches import sidecar_path, FASTAI_PATCHES
from swrm_fastai.test_utils import blobs_dls

def _net(): return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 5))

@pytest.fixture
def saved(tmp_path):
    "A DySWRM fit saved as 'dyswrm', and a fresh plain-loss Learner that loaded it"
    torch.manual_seed(0)
    dls = blobs_dls((60, 30, 15, 8, 4), n_valid=6, bs=16); cnt = torch.tensor([60, 30, 15, 8, 4])
    lf = DySWRMLoss(cnt, window=3, lr=0.05)
    learn = Learner(dls, _net(), loss_func=lf, path=tmp_path, cbs=[])
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    learn.save('dyswrm')
    learn2 = Learner(dls, _net(), loss_func=nn.CrossEntropyLoss(), path=tmp_path)
    learn2.load('dyswrm')
    return dls, cnt, lf, learn, learn2, tmp_path

def test_loaded_loss_keeps_training(saved):
    "The loaded DySWRM loss keeps training: its hook is registered once"
    dls, cnt, lf, learn, learn2, tmp = saved
    s0 = learn2.loss_func.positions.detach().clone()
    with learn2.no_bar(), learn2.no_logging(): learn2.fit(1, 1e-2)
    assert not torch.equal(learn2.loss_func.positions.detach(), s0); eq(int(learn2.loss_func.n_steps), 3 * len(dls.train))

def test_swrm_loss_and_window_round_trip(saved):
    "An SWRM loss and a similarity window survive save/load; a loss of the same class is restored in place; a plain loss leaves no sidecar"
    dls, cnt, lf, learn, learn2, tmp = saved
    sw5 = SimilarityWindow(cnt, torch.tensor([0., 3., 1., 2., 4.]), 3, beta=2.)
    learn.loss_func, learn.similarity_window = SWRMLoss.from_window(sw5), sw5
    learn.save('swrm')
    learn3 = Learner(dls, _net(), loss_func=nn.CrossEntropyLoss(), path=tmp)
    learn3.load('swrm')
    eq(type(learn3.loss_func), SWRMLoss); eq(learn3.loss_func.class_weights, sw5.weights)
    eq(learn3.loss_func.class_margins, sw5.margins); eq(learn3.similarity_window.positions, sw5.positions)
    eq(learn3.similarity_window.window, 3); eq(learn3.similarity_window.beta, 2.)
    lf_keep = DySWRMLoss(cnt, window=3, lr=0.05, seed=9)
    learn4 = Learner(dls, _net(), loss_func=lf_keep, path=tmp)
    learn4.load('dyswrm'); same(learn4.loss_func, lf_keep); eq(lf_keep.positions, lf.positions)
    del learn.similarity_window; learn.loss_func = nn.CrossEntropyLoss()
    f = learn.save('swrm'); assert not sidecar_path(f).exists()
    learn3.loss_func = nn.CrossEntropyLoss(); learn3.load('swrm'); eq(type(learn3.loss_func), nn.CrossEntropyLoss)

class Lookup:
    def __init__(self, seq): self.seq = seq
    def __call__(self, i): return self.seq[i]

LABELS = ['b'] * 5 + ['a'] * 2 + ['c'] * 9
XS = [torch.randn(3, generator=torch.Generator().manual_seed(i)) for i in range(len(LABELS))]
SPLITS = [list(range(12)), list(range(12, 16))]

def _dls(ytfms, ys=LABELS): return Datasets(list(range(16)), tfms=[[Lookup(XS)], [Lookup(ys)] + ytfms], splits=SPLITS).dataloaders(bs=4)

def test_class_counts_on_fastai_data():
    "class_counts from a fastai dataset's targets or from dls.class_counts; a class without samples named"
    dls_ = _dls([Categorize()])
    eq(list(dls_.vocab), ['a', 'b', 'c'])
    eq(class_counts(dls_), torch.tensor([LABELS[:12].count(v) for v in 'abc']))
    dls_.class_counts = torch.tensor([7, 8, 9]); eq(class_counts(dls_), torch.tensor([7, 8, 9]))
    d0 = _dls([Categorize(vocab=['a', 'b', 'c', 'd'])])
    refused(lambda: class_counts(d0), contains="class 3 ('d') has training count 0")
    eq(class_counts(d0, strict=False)[3], 0)

def test_class_counts_refuses_multilabel_and_regression():
    "Multi-label and regression data: one line saying what SWRM needs, never a torch error"
    m = _dls([MultiCategorize(), OneHotEncode()], [[o] for o in LABELS])
    refused(lambda: class_counts(m), contains="SWRM needs single-label classification")
    refused(lambda: class_counts(m), contains="targets of shape (3,) (one-hot or multi-label)")
    r = _dls([RegressionSetup()], [float(i) / 3 for i in range(16)])
    refused(lambda: class_counts(r), contains="SWRM needs single-label classification")
    refused(lambda: class_counts(DataLoaders(DataLoader(TensorDataset(torch.randn(4, 2), torch.rand(4))))), contains="torch.float32 targets")
    eq(class_index(np.int64(3)), 3); eq(class_index(torch.tensor([2])), 2)
    refused(lambda: class_index(2.0), contains="float targets (e.g. 2.0)")
    refused(lambda: class_index(True), contains="bool targets")

def test_from_dls_and_names():
    "DySWRMLoss.from_dls: counts and class names from the data; counts as a Series aligned by name, or refused; names kept by swrm_state"
    dls_ = _dls([Categorize()]); dls_.class_counts = torch.tensor([7, 8, 9])
    dy = DySWRMLoss.from_dls(dls_, window=2)
    eq(dy.names, ['a', 'b', 'c']); eq(dy.counts, torch.tensor([7., 8., 9.]))
    assert 'line (left to right): ' in repr(dy.as_window())
    assert ' < '.join(sorted(dy.as_window().line().split(' < '))) == 'a < b < c'
    vc = pd.Series(LABELS[:12]).value_counts()  # b: 5, c: 5, a: 2 in frequency order
    eq(DySWRMLoss(vc, window=2, names=['a', 'b', 'c']).counts, torch.tensor([2., 5., 5.]))
    refused(lambda: DySWRMLoss(vc, window=2), contains="cannot be put in class order without the class names")
    refused(lambda: ClassBalancedLoss(vc), contains="pass names=")
    refused(lambda: DySWRMLoss([3, 4, 5], window=2, names=['a', 'b']), contains="2 names given for 3 classes")
    dy2 = DySWRMLoss([3, 4, 5], window=2).set_names(['x', 'y', 'z'])
    eq(MarginCELoss.from_swrm_state(dy2.swrm_state()).names, ['x', 'y', 'z'])
    refused(lambda: dy2.set_names(['x']), contains="1 names given for 3 classes")

def test_every_fastai_patch_is_listed():
    "FASTAI_PATCHES names exactly the fastai methods the package defines or wraps, each with its module"
    import swrm_fastai.all  # noqa: F401  (every module that patches)
    from fastai.learner import Learner
    from fastai.interpret import ClassificationInterpretation
    found = {}
    for cls in (Learner, ClassificationInterpretation):
        for k, v in vars(cls).items():
            mod = getattr(v, '__module__', '') or ''
            if callable(v) and mod.startswith('swrm_fastai.'): found[f'{cls.__name__}.{k}'] = mod.split('.')[-1]
    assert found == {k: v[1] for k, v in FASTAI_PATCHES.items()}, (found, FASTAI_PATCHES)
    assert all(v[0] == ('wrapper' if hasattr(Learner, '_fastai_' + k.split('.')[1]) else 'addition') for k, v in FASTAI_PATCHES.items())
