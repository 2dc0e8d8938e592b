"Integration tests of the two-stage callbacks on a tiny long-tailed image folder with a real (untrained) resnet18"
import copy, warnings
import numpy as np, pytest, torch, torch.nn as nn
from PIL import Image
from fastai.vision.all import (vision_learner, resnet18, ImageDataLoaders, DataBlock, ImageBlock, CategoryBlock,
                               get_image_files, parent_label, GrandparentSplitter, Callback, CrossEntropyLossFlat,
                               MixUp, Flip, load_learner, Learner, MultiCategoryBlock, RegressionBlock, BCEWithLogitsLossFlat,
                               MSELossFlat, SaveModelCallback, EarlyStoppingCallback, ReduceLROnPlateau)
from fastai.callback.progress import no_bar  # noqa: F401
from swrm_fastai.similarity import SimilarityWindow, embed_1d, swr_weights, swm_margins
from swrm_fastai.losses import SWRMLoss, DySWRMLoss, ClassBalancedLoss
from swrm_fastai.core import class_counts
from swrm_fastai.callback import SimilarityWindowCallback, DeferredReweighting, LossSwitchCallback, class_prototypes
from fastcore.test import test_eq as eq, test_close as close, test_fail as refused
from fastai.data.core import DataLoaders, Datasets
from fastai.data.transforms import Categorize, MultiCategorize, OneHotEncode, RegressionSetup
from fastai.data.load import DataLoader as FDataLoader
from torch.utils.data import TensorDataset

COUNTS = [20, 14, 10, 7, 5, 4, 3, 2, 2, 2]  # long-tailed training counts, 10 classes
VOCAB = [f'k{c}' for c in range(len(COUNTS))]
PX = 16

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "One intra-op thread: on a small shared CI machine this is faster than oversubscribed OpenMP threads for these tiny batches"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def write_images(root):
    "train/ and valid/ folders of 16x16 PNGs under `root`, one colour per class plus noise, long-tailed `COUNTS`"
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 225, size=(len(COUNTS), 3))
    for split, counts in (('train', COUNTS), ('valid', [2] * len(COUNTS))):
        for c, n in enumerate(counts):
            d = root/split/VOCAB[c]; d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(colours[c] + rng.normal(0, 25, size=(PX, PX, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d/f'{i}.png')
    return root

@pytest.fixture(scope='module')
def img_path(tmp_path_factory): return write_images(tmp_path_factory.mktemp('lt_images'))

def make_dls(path, bs=16, vocab=None, batch_tfms=None):
    blk = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=vocab)), get_items=get_image_files, get_y=parent_label,
                    splitter=GrandparentSplitter(train_name='train', valid_name='valid'), batch_tfms=batch_tfms)
    return blk.dataloaders(path, bs=bs, num_workers=0)

def make_learner(path, cbs=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    learn = vision_learner(make_dls(path), resnet18, pretrained=False, loss_func=CrossEntropyLossFlat(), cbs=cbs, **kwargs)
    learn.path = path
    return learn

class LossLog(Callback):
    "Record, per epoch, the loss in force during training and at the snapshot epoch a copy of the model before the switch"
    order = -1  # before_epoch before the switch callback (order 0): the snapshot is the model the switch sees
    def __init__(self, snap_epoch=None): self.snap_epoch, self.types, self.losses, self.snap = snap_epoch, [], [], None
    def before_epoch(self):
        if self.epoch == self.snap_epoch and self.snap is None: self.snap = copy.deepcopy(self.learn.model)
    def after_loss(self):
        if not self.training: return
        lf = self.learn.loss_func
        lf = getattr(self.learn, 'mix_up', None).old_lf if type(lf).__name__ == 'method' else lf
        if self.iter == 0: self.types.append(type(lf).__name__)
        self.losses.append(float(self.learn.loss))

def features_by_hand(model, dls):
    "Prototypes recomputed without hooks: the vision_learner model minus its final Linear, batch size 3, masked means"
    feat = nn.Sequential(model[0], model[1][:-1]).eval()
    dl = dls.train.new(shuffle=False, drop_last=False, bs=3)
    fs, ys = [], []
    with torch.no_grad():
        for x, y in dl: fs.append(feat(x).float()); ys.append(y.as_subclass(torch.Tensor))
    f, y = torch.cat(fs), torch.cat(ys)
    return torch.stack([f[y == c].mean(0) for c in range(len(dls.vocab))]), torch.bincount(y, minlength=len(dls.vocab))

def check_window_by_hand(learn, snap, window, beta, tau=1.):
    "Prototypes recomputed by hand equal the captured ones; the window equals Eq. 2/3 by hand on their embedding"
    protos, counts = features_by_hand(snap, learn.dls)
    assert counts.tolist() == COUNTS
    sw, captured = learn.similarity_window, learn.swrm_switch.switch_prototypes
    torch.testing.assert_close(captured, protos, rtol=1e-4, atol=1e-5)
    # 1-D t-SNE amplifies float32 rounding (features of a batch of 3 vs 16 differ by ~1e-7, positions then by ~1e-2),
    # so the embedding is checked on the captured prototypes: same prototypes + same seed = same positions
    pos = embed_1d(captured, seed=0)
    torch.testing.assert_close(sw.positions, pos)
    torch.testing.assert_close(sw.counts.cpu(), torch.tensor(COUNTS, dtype=sw.counts.dtype))
    # Eq. 2 and Eq. 3 from the similarity core on that embedding and the hand-counted training set
    torch.testing.assert_close(sw.weights, swr_weights(counts, pos, window), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sw.margins, swm_margins(pos, window, beta, tau), rtol=1e-5, atol=1e-6)
    return sw

def test_two_stage_swrm(img_path, capsys):
    log = LossLog(snap_epoch=2)
    learn = make_learner(img_path, cbs=[log, SimilarityWindowCallback(start_epoch=2, window=5, beta=1.)])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 1e-3)
    assert log.types == ['CrossEntropyLossFlat'] * 2 + ['SWRMLoss']
    assert all(np.isfinite(log.losses))
    assert isinstance(learn.loss_func, SWRMLoss)
    sw = check_window_by_hand(learn, log.snap, window=5, beta=1.)
    # the loss carries the window's weights and margins: its per-sample value equals Eq. 4 by hand
    z, y = torch.randn(6, 10), torch.arange(6)
    ref = sw.weights[y] * nn.functional.cross_entropy(z + sw.margins[y][:, None] * nn.functional.one_hot(y, 10), y, reduction='none')
    torch.testing.assert_close(learn.loss_func(z, y), ref.mean(), rtol=1e-5, atol=1e-6)
    assert 'SimilarityWindowCallback: epoch 2: SWRM' in capsys.readouterr().out
    # a second fit keeps the swapped loss and does not switch again
    lf = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4)
    assert learn.loss_func is lf and learn.similarity_window is sw
    cost = learn.swrm_switch.switch_cost()
    print(f"switch cost: {cost}")
    assert cost['total'] > 0 and cost['epoch'] > 0 and cost['prototypes'] + cost['embedding'] <= cost['total']

def test_fraction_swr_last_epoch(img_path):
    log = LossLog()
    cb = SimilarityWindowCallback(start_epoch=0.5, window=4, loss='swr', prototypes='last_epoch', verbose=False)
    learn = make_learner(img_path, cbs=[log, cb])
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    assert log.types == ['CrossEntropyLossFlat', 'SWRLoss'] and cb.switch_epoch == 1
    # SWR: the window's weights, no margin
    z, y = torch.randn(6, 10), torch.arange(6)
    ref = learn.similarity_window.weights[y] * nn.functional.cross_entropy(z, y, reduction='none')
    torch.testing.assert_close(learn.loss_func(z, y), ref.mean(), rtol=1e-5, atol=1e-6)
    assert cb.switch_prototypes.shape == (10, 512) and cb._hook is None  # resnet18 head: 512 features into the last Linear

def test_fp16_mixup(img_path):
    log = LossLog(snap_epoch=1)
    cb = SimilarityWindowCallback(start_epoch=1, window=5, beta=2., verbose=False)
    learn = make_learner(img_path, cbs=[log, MixUp(), cb]).to_fp16()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # autocast/GradScaler warn that CUDA is absent on CPU runs
        learn.fit(2, 1e-3)
    assert log.types == ['CrossEntropyLossFlat', 'SWRMLoss']  # MixUp wrapped our stage-2 loss
    assert all(np.isfinite(log.losses)) and isinstance(learn.loss_func, SWRMLoss)
    check_window_by_hand(learn, log.snap, window=5, beta=2.)

def test_save_load_export(img_path, tmp_path):
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(start_epoch=1, window=5, verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    sw, lf = learn.similarity_window, learn.loss_func
    learn.save('stage2')
    fresh = make_learner(img_path, seed=1)
    assert isinstance(fresh.loss_func, CrossEntropyLossFlat)
    fresh.load('stage2')
    assert isinstance(fresh.loss_func, SWRMLoss)
    torch.testing.assert_close(fresh.similarity_window.positions, sw.positions)
    torch.testing.assert_close(fresh.similarity_window.weights, sw.weights)
    z, y = torch.randn(5, 10), torch.arange(5)
    torch.testing.assert_close(fresh.loss_func(z, y), lf(z, y))
    # resuming: a fresh learner with the callback, loaded after the switch, keeps the loaded loss and never re-switches
    cb = SimilarityWindowCallback(start_epoch=0, window=5, verbose=False)
    resumed = make_learner(img_path, seed=1, cbs=cb); resumed.load('stage2'); loaded = resumed.loss_func
    with resumed.no_bar(), resumed.no_logging(): resumed.fit(1, 1e-4)
    assert resumed.loss_func is loaded and cb.switched and cb.switch_prototypes is None
    # export / load_learner / predict
    learn.export(tmp_path/'export.pkl')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        inf = load_learner(tmp_path/'export.pkl')
    assert isinstance(inf.loss_func, SWRMLoss)
    torch.testing.assert_close(inf.similarity_window.margins, sw.margins)
    img = get_image_files(img_path/'valid')[0]
    with inf.no_bar(), learn.no_bar():
        p1, p2 = inf.predict(img), learn.predict(img)
    assert p1[0] == p2[0] and p1[0] in VOCAB
    torch.testing.assert_close(p1[2], p2[2], rtol=1e-4, atol=1e-5)
    # a fit after load_learner's reload does not switch again
    assert inf.swrm_switch.switched

def test_prototypes_batch_size_invariant(img_path):
    learn = make_learner(img_path)
    dl = lambda bs: learn.dls.train.new(shuffle=False, drop_last=False, bs=bs)
    p4, n4 = class_prototypes(learn.model, dl(4), 10)
    p32, n32 = class_prototypes(learn.model, dl(32), 10)
    torch.testing.assert_close(p4, p32, rtol=1e-4, atol=1e-5)
    assert n4.tolist() == n32.tolist() == COUNTS
    ref, _ = features_by_hand(learn.model, learn.dls)
    torch.testing.assert_close(p4, ref, rtol=1e-4, atol=1e-5)

@pytest.mark.parametrize('augment', [False, True])
def test_pass_without_augmentation(img_path, augment):
    "The prototype pass uses the validation transforms unless augment=True (training-only Flip(p=1) here)"
    log = LossLog(snap_epoch=0)
    torch.manual_seed(0)
    cb = SimilarityWindowCallback(start_epoch=0, window=5, augment=augment, verbose=False)
    learn = vision_learner(make_dls(img_path, batch_tfms=Flip(p=1.)), resnet18, pretrained=False, cbs=[log, cb])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    plain, _ = features_by_hand(log.snap, make_dls(img_path))  # the same images, never flipped
    if augment: assert not torch.allclose(cb.switch_prototypes, plain, rtol=1e-4, atol=1e-5)
    else: torch.testing.assert_close(cb.switch_prototypes, plain, rtol=1e-4, atol=1e-5)

def test_dyswrm_and_drw(img_path):
    # the paper's DySWRM: its own seeded start, no similarity window from prototypes
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(start_epoch=0, window=5, loss='dyswrm', verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert isinstance(learn.loss_func, DySWRMLoss) and int(learn.loss_func.n_steps) > 0
    assert getattr(learn, 'similarity_window', None) is None and learn.swrm_switch.switch_prototypes is None
    # DySWRM started from SWRM's similarity
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(start_epoch=0, window=5, loss='dyswrm-tsne', verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert isinstance(learn.loss_func, DySWRMLoss)
    # DySWRM starts at the standardised embedding and has moved after an epoch of steps
    p0 = learn.similarity_window.positions
    q0 = (p0 - p0.mean()) / p0.std(unbiased=False)
    assert int(learn.loss_func.n_steps) > 0 and not torch.allclose(learn.loss_func.positions.detach(), q0)
    assert torch.allclose(learn.loss_func.positions.detach(), q0, atol=0.2)
    learn = make_learner(img_path, cbs=DeferredReweighting(start_epoch=0, verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert isinstance(learn.loss_func, ClassBalancedLoss)
    n = torch.tensor(COUNTS, dtype=torch.float64); w = (1 - 0.9999) / (1 - 0.9999 ** n); w = w / w.sum() * 10
    z, y = torch.randn(10, 10), torch.arange(10)
    ref = (w.float()[y] * nn.functional.cross_entropy(z, y, reduction='none')).mean()
    torch.testing.assert_close(learn.loss_func(z, y), ref, rtol=1e-4, atol=1e-5)

def test_errors_and_warnings(img_path):
    # a class of the vocab with no training image is named
    torch.manual_seed(0)
    dls = make_dls(img_path, vocab=VOCAB + ['ghost'])
    learn = vision_learner(dls, resnet18, pretrained=False, cbs=SimilarityWindowCallback(0, window=5, verbose=False))
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match="'ghost'\\) has no sample in the training set"): learn.fit(1)
    # start_epoch beyond the fit: a warning, never a switch
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(3, window=5, verbose=False))
    with learn.no_bar(), learn.no_logging(), pytest.warns(UserWarning, match='never switched'): learn.fit(1)
    assert isinstance(learn.loss_func, CrossEntropyLossFlat) and not learn.swrm_switch.switched
    # a model without a linear layer: an error that says to pass layer=, and layer= (by name: the Flatten) makes it work
    dls = make_dls(img_path)
    conv = lambda: nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learn = Learner(dls, conv(), loss_func=CrossEntropyLossFlat(), cbs=SimilarityWindowCallback(0, window=5, verbose=False))
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match='pass `layer=`'): learn.fit(1)
    m = conv()
    learn = Learner(dls, m, loss_func=CrossEntropyLossFlat(), cbs=SimilarityWindowCallback(0, window=5, layer='2', verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert isinstance(learn.loss_func, SWRMLoss) and learn.swrm_switch.switch_prototypes.shape == (10, 10)

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('loss', ['swrm', 'dyswrm-tsne'])
def test_switch_on_cuda(img_path, loss):
    log = LossLog(snap_epoch=1)
    learn = make_learner(img_path, cbs=[log, SimilarityWindowCallback(1, window=5, loss=loss, verbose=False)]).to_fp16()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    dev = next(learn.model.parameters()).device
    assert dev.type == 'cuda'
    lf = learn.loss_func
    bufs = {k: v for k, v in list(getattr(lf, 'named_buffers', lambda: [])()) + list(getattr(lf, 'named_parameters', lambda: [])())}
    assert bufs and all(v.device == dev for v in bufs.values()), {k: v.device for k, v in bufs.items()}
    assert learn.similarity_window.positions.device == dev and all(np.isfinite(log.losses))
    if loss == 'swrm': check_window_by_hand(learn, log.snap, window=5, beta=1.)

# --- issue 13: refuse before the first batch, trackers across the switch, fine_tune

class BatchCount(Callback):
    "Counts the training batches that ran"
    order = -5
    def __init__(self): self.n = 0
    def after_batch(self):
        if self.training: self.n += 1

def refused_before_training(learn, match, fit=lambda learn: learn.fit(3, 1e-3)):
    "`fit(learn)` raises a ValueError matching `match`, and not a single training batch ran before it"
    counter = BatchCount()
    learn.add_cb(counter)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter('ignore')
        fit(learn)
    assert counter.n == 0, f"{counter.n} training batches ran before the error"

def conv_net(): return nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def label_dls(path, block, get_y):
    "The image folder with other targets: multi-label (`MultiCategoryBlock`) or regression (`RegressionBlock`)"
    blk = DataBlock(blocks=(ImageBlock, block), get_items=get_image_files, get_y=get_y,
                    splitter=GrandparentSplitter(train_name='train', valid_name='valid'))
    return blk.dataloaders(path, bs=16, num_workers=0)

def _multi_label(o): return [parent_label(o)]
def _regression(o): return float(VOCAB.index(parent_label(o))) / 3

REFUSALS = {  # name: (callback, learner builder, message)
    'window > C': (lambda: SimilarityWindowCallback(2, window=11), 'vision', r'2\.\.C = 2\.\.10, got 11'),
    'no linear layer': (lambda: SimilarityWindowCallback(2, window=5), 'conv', 'pass `layer=`'),
    'no such layer': (lambda: SimilarityWindowCallback(2, window=5, layer='head.fc'), 'vision', "no submodule named 'head.fc'"),
    'class missing': (lambda: SimilarityWindowCallback(2, window=5), 'ghost', r"'ghost'\) has no sample in the training set"),
    'multi-label': (lambda: SimilarityWindowCallback(2, window=5), 'multi', 'SWRM needs single-label classification'),
    'regression': (lambda: SimilarityWindowCallback(2, window=5), 'regression', 'SWRM needs single-label classification'),
    'dyswrm multi-label': (lambda: SimilarityWindowCallback(2, window=5, loss='dyswrm'), 'multi', 'needs single-label'),
    'last_epoch class missing': (lambda: SimilarityWindowCallback(2, window=5, prototypes='last_epoch'), 'ghost', "'ghost'"),
    'loss_kwargs typo': (lambda: SimilarityWindowCallback(2, window=5, loss_kwargs=dict(reductio='sum')), 'vision', 'do not fit'),
    'dyswrm bad lr': (lambda: SimilarityWindowCallback(2, window=5, loss='dyswrm', loss_kwargs=dict(lr=-1.)), 'vision', 'lr must be'),
    'drw cannot re-weight': (lambda: DeferredReweighting(2), 'mse', 'cannot re-weight a MSELoss'),
    'drw multi-label': (lambda: DeferredReweighting(2), 'multi', 'SWRM needs single-label classification'),
    'drw class missing': (lambda: DeferredReweighting(2), 'ghost', r"'ghost'\) has no sample"),
    'switch loss for other classes': (lambda: LossSwitchCallback(2, DySWRMLoss(COUNTS[:9], window=3)), 'vision',
                                      'built for 9 classes but the data has 10'),
}

@pytest.mark.parametrize('case', list(REFUSALS))
def test_refused_before_the_first_batch(img_path, case):
    make_cb, kind, match = REFUSALS[case]
    torch.manual_seed(0)
    cbs = make_cb()
    if kind == 'vision': learn = make_learner(img_path, cbs=cbs)
    elif kind == 'mse': learn = vision_learner(make_dls(img_path), resnet18, pretrained=False, loss_func=nn.MSELoss(), cbs=cbs)
    elif kind == 'conv': learn = Learner(make_dls(img_path), conv_net(), loss_func=CrossEntropyLossFlat(), cbs=cbs)
    elif kind == 'ghost': learn = vision_learner(make_dls(img_path, vocab=VOCAB + ['ghost']), resnet18, pretrained=False, cbs=cbs)
    else:
        dls = label_dls(img_path, MultiCategoryBlock if kind == 'multi' else RegressionBlock,
                        _multi_label if kind == 'multi' else _regression)
        learn = vision_learner(dls, resnet18, pretrained=False, n_out=len(VOCAB), cbs=cbs,
                               loss_func=BCEWithLogitsLossFlat() if kind == 'multi' else MSELossFlat())
    refused_before_training(learn, match)

def test_refused_before_fine_tune_warmup(img_path):
    "fine_tune's frozen warm-up is checked too: the error comes before its first batch"
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(0.5, window=11))
    refused_before_training(learn, r'2\.\.C = 2\.\.10', fit=lambda learn: learn.fine_tune(2, freeze_epochs=1))

def test_refused_at_construction(img_path):
    for kw, match in ((dict(window=0), 'window size W'), (dict(window=2.5), 'window size W'), (dict(beta=-1.), 'beta'),
                      (dict(tau=0.), 'tau'), (dict(perplexity=0), 'perplexity'), (dict(start_epoch=-1), 'start_epoch'),
                      (dict(start_epoch=True), 'start_epoch'), (dict(start_epoch=1.5), 'fraction of the fit')):
        with pytest.raises(ValueError, match=match): SimilarityWindowCallback(**{'start_epoch': 1, **kw})
    with pytest.raises(ValueError, match=r'beta must be in \[0, 1\)'): DeferredReweighting(1, beta=1.)
    # class_counts on multi-label or regression data: the same line, not a torch error
    for block, get_y in ((MultiCategoryBlock, _multi_label), (RegressionBlock, _regression)):
        with pytest.raises(ValueError, match='SWRM needs single-label classification'): class_counts(label_dls(img_path, block, get_y))

def test_numpy_start_epoch(img_path):
    "numpy integers and floats are epoch indices and fractions, like Python's"
    for start in (np.int64(1), np.float32(0.5)):
        log = LossLog()
        learn = make_learner(img_path, cbs=[log, SimilarityWindowCallback(start, window=5, verbose=False)])
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
        assert log.types == ['CrossEntropyLossFlat', 'SWRMLoss'] and learn.swrm_switch.switch_epoch == 1

class Snapshots(Callback):
    "A copy of the model's weights after every epoch (after the trackers ran)"
    order = 70
    def __init__(self): self.states = []
    def after_epoch(self): self.states.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})

def _same(a, b): return all(torch.equal(a[k], b[k]) for k in a)

@pytest.mark.parametrize('make_cb', [lambda **kw: SimilarityWindowCallback(1, window=5, **kw),
                                     lambda **kw: DeferredReweighting(1, **kw)], ids=['swrm', 'drw'])
def test_save_model_across_the_switch(img_path, make_cb, capsys):
    "SaveModelCallback compares stage-2 epochs only: the fit ends with a stage-2 model and the stage-2 loss"
    snaps, cb = Snapshots(), make_cb()
    learn = make_learner(img_path, cbs=[cb, SaveModelCallback(), snaps])
    with learn.no_bar(): learn.fit(3, 1e-3)
    out = capsys.readouterr().out
    assert 'reset SaveModelCallback: from now on they compare stage-2 epochs only' in out
    valid = [v[1] for v in learn.recorder.values]
    assert learn.save_model.best == min(valid[1:])  # the best stage-2 epoch, whatever stage 1 scored
    best = 1 + int(np.argmin(valid[1:]))
    assert _same(learn.model.state_dict(), snaps.states[best]) and not _same(learn.model.state_dict(), snaps.states[0])
    assert type(learn.loss_func).__name__ in ('SWRMLoss', 'ClassBalancedLoss')
    if isinstance(cb, SimilarityWindowCallback) and valid[0] < min(valid[1:]):
        # the reason: the loss changes scale at the switch. Without the reset, the cross-entropy model of epoch 0 comes back
        learn = make_learner(img_path, cbs=[make_cb(reset_trackers=False, verbose=False), SaveModelCallback(), Snapshots()])
        with learn.no_bar(): learn.fit(3, 1e-3)
        assert _same(learn.model.state_dict(), learn.cbs.filter(lambda o: isinstance(o, Snapshots))[0].states[0])

def test_early_stopping_not_at_the_switch(img_path):
    "EarlyStoppingCallback(patience=2) does not stop because the loss changed scale: all 4 epochs run"
    cb = SimilarityWindowCallback(1, window=5, verbose=False)
    learn = make_learner(img_path, cbs=[cb, EarlyStoppingCallback(patience=2), ReduceLROnPlateau(patience=2)])
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-3)
    assert len(learn.recorder.values) == 4 and isinstance(learn.loss_func, SWRMLoss)
    assert 'reset EarlyStoppingCallback, ReduceLROnPlateau' in cb.messages[-1]

def test_fine_tune_fraction(img_path):
    "fine_tune(2, freeze_epochs=1), start_epoch=0.5: epoch 1 of the unfrozen fit, never the warm-up; no warning"
    log, cb = LossLog(), SimilarityWindowCallback(0.5, window=5, verbose=False)
    learn = make_learner(img_path, cbs=[log, cb])
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        learn.fine_tune(2, freeze_epochs=1)
    assert log.types == ['CrossEntropyLossFlat', 'CrossEntropyLossFlat', 'SWRMLoss']  # warm-up, unfrozen 0, unfrozen 1
    assert cb.switch_epoch == 1 and "`fine_tune`'s frozen warm-up: no switch" in cb.messages[0]
    assert not [o for o in w if 'SimilarityWindowCallback' in str(o.message)], [str(o.message) for o in w]
    # start_epoch=0: the first unfrozen epoch, from a model whose head trained in the warm-up (no warning either)
    log, cb = LossLog(), SimilarityWindowCallback(0, window=5, verbose=False)
    learn = make_learner(img_path, cbs=[log, cb])
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        learn.fine_tune(1, freeze_epochs=1)
    assert log.types == ['CrossEntropyLossFlat', 'SWRMLoss'] and cb.switch_epoch == 0
    assert not [o for o in w if 'SimilarityWindowCallback' in str(o.message)]

def test_switch_from_an_untrained_model_warns(img_path):
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(0.4, window=5, verbose=False))  # 0.4 of 1 epoch: epoch 0
    with learn.no_bar(), learn.no_logging(), pytest.warns(UserWarning, match='has not trained a single epoch'): learn.fit(1, 1e-3)
    # a learner that trained before (its optimiser has Adam's moments), then gets the callback: no warning
    learn = make_learner(img_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('error')
        learn.fit(1, 1e-3, cbs=SimilarityWindowCallback(0, window=5, verbose=False))
    assert isinstance(learn.loss_func, SWRMLoss)

def test_stage2_loss_refused_at_construction():
    "A name or a class is not a loss: refused at once, with the call that works"
    with pytest.raises(ValueError, match=r"not the name 'dyswrm': .*SimilarityWindowCallback\(start_epoch, loss='dyswrm'\)"):
        LossSwitchCallback(1, 'dyswrm')
    with pytest.raises(ValueError, match=r"not the class DySWRMLoss: .*DySWRMLoss.from_dls\(dls"): LossSwitchCallback(1, DySWRMLoss)
    with pytest.raises(ValueError, match='loss module or function, got int'): LossSwitchCallback(1, 3)
    LossSwitchCallback(1, CrossEntropyLossFlat()); LossSwitchCallback(1, nn.functional.cross_entropy)  # modules and functions are fine

def test_stopped_before_the_switch_warns(img_path):
    "EarlyStoppingCallback stops the fit in stage 1: a warning names the epoch and the switch that never came"
    cb = SimilarityWindowCallback(3, window=5, verbose=False)
    stop = EarlyStoppingCallback(min_delta=1e9, patience=0)  # no epoch improves by 1e9: stops after epoch 1
    learn = make_learner(img_path, cbs=[cb, stop])
    with learn.no_bar(), learn.no_logging(), pytest.warns(UserWarning, match=r'ended after epoch 1 of 0\.\.5 .*planned switch at epoch 3'):
        learn.fit(6, 1e-3)
    assert not cb.switched and isinstance(learn.loss_func, CrossEntropyLossFlat)
    # a fit that reaches the switch does not warn
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(1, window=5, verbose=False))
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('error'); learn.fit(2, 1e-3)

class SeenClasses(Callback):
    "The classes of the training batches of epoch `epoch`"
    def __init__(self, epoch): self.at, self.seen = epoch, set()
    def after_batch(self):
        if self.training and self.epoch == self.at: self.seen |= set(self.yb[0].as_subclass(torch.Tensor).tolist())

def test_last_epoch_prototypes_fall_back_to_a_pass(img_path):
    "fastai drops the last partial batch: a class missing from the last stage-1 epoch gets its prototype from a pass"
    from fastai.torch_core import set_seed
    for seed in range(20):
        set_seed(seed, reproducible=True)
        seen, log = SeenClasses(0), LossLog(snap_epoch=1)
        cb = SimilarityWindowCallback(1, window=5, prototypes='last_epoch', verbose=False)
        torch.manual_seed(0)
        learn = vision_learner(make_dls(img_path, bs=35), resnet18, pretrained=False, loss_func=CrossEntropyLossFlat(),
                               cbs=[seen, log, cb])  # 69 images, batches of 35: 34 dropped in each epoch
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
        missing = sorted(set(range(len(COUNTS))) - seen.seen)
        if missing: break
    assert missing, "no seed left a class out of the last stage-1 epoch"
    assert cb.switched and f"{', '.join(VOCAB[c] for c in missing)} not in the last epoch: from a pass" in cb.messages[-1]
    protos, _ = features_by_hand(log.snap, learn.dls)  # the pass, by hand, on the model the switch saw
    torch.testing.assert_close(cb.switch_prototypes[missing], protos[missing], rtol=1e-4, atol=1e-5)
    assert learn.similarity_window.counts.tolist() == COUNTS  # the weights still use the full training counts


# The two-stage callbacks on the notebook's tiny tabular data (6 classes, 4 features): the switch against a
# hand-built window, and every refusal before the first training batch. Each test seeds its own draws.
TC, TD = 6, 4

def tabular_data():
    "The notebook's tabular lesson: 6 long-tailed Gaussian classes in 4-D, as `x, y, vocab, dls`"
    g = torch.Generator().manual_seed(0)
    y = torch.repeat_interleave(torch.arange(TC), torch.tensor([40, 24, 14, 8, 5, 3]))
    centres = torch.randn(TC, TD, generator=g) * 3
    x = centres[y] + torch.randn(len(y), TD, generator=g)
    vocab = [f'c{i}' for i in range(TC)]
    return x, y, vocab, tensor_dls(x, y, vocab)

def tensor_dls(x, y, vocab, bs=8, valid_pct=0.25, seed=0):
    "fastai DataLoaders over tensors `x` (features) and integer labels `y`"
    items = list(range(len(x)))
    n_valid = int(len(x) * valid_pct)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).tolist()
    dsets = Datasets(items, tfms=[[x.__getitem__], [lambda i: vocab[y[i]], Categorize(vocab=vocab)]], splits=[perm[n_valid:], perm[:n_valid]])
    return dsets.dataloaders(bs=bs, num_workers=0)

class TrainingBatches(Callback):
    "Counts the training batches that ran"
    def __init__(self): self.n = 0
    def after_batch(self): self.n += self.training


def test_switch_against_hand_built_window():
    "weights and margins equal those built by hand from prototypes recomputed from a snapshot of the model at the switch; no switch outside a real fit"
    x, y, vocab, dls = tabular_data(); C, D = TC, TD
    # weights and margins equal those built by hand from prototypes recomputed from a snapshot of the model at the switch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))
    cb = SimilarityWindowCallback(start_epoch=2, window=3, beta=2., verbose=False)
    snap = {}
    class _Snap(Callback):
        order = -1  # before the switch callback's before_epoch
        def before_epoch(self):
            if self.epoch == 2: snap['model'] = copy.deepcopy(self.learn.model)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[_Snap(), cb])
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)  # fit of 2 epochs: switch at epoch 2 never happens
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-2)
    assert isinstance(learn.loss_func, SWRMLoss)
    m0 = snap['model']
    with torch.no_grad():
        tr = dls.train_ds
        xs = torch.stack([tr[i][0] for i in range(len(tr))]); ys = torch.tensor([int(tr[i][1]) for i in range(len(tr))])
        hid = m0[1](m0[0](xs))
    ref_protos = torch.stack([hid[ys == c].mean(0) for c in range(C)])
    close(cb.switch_prototypes, ref_protos, eps=1e-5)
    pos = embed_1d(cb.switch_prototypes, seed=0)  # t-SNE amplifies float rounding: embed the captured prototypes (checked above)
    eq(learn.similarity_window.positions, pos)
    close(learn.similarity_window.weights, swr_weights(torch.bincount(ys, minlength=C), pos, 3), eps=1e-5)
    close(learn.similarity_window.margins, swm_margins(pos, 3, beta=2.), eps=1e-5)
    # a later fit keeps the loss, never switches again, never warns
    lf = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert learn.loss_func is lf
    # validate / get_preds before any fit never switch, even with start_epoch=0
    learn2 = Learner(dls, nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C)), loss_func=CrossEntropyLossFlat(),
                     cbs=SimilarityWindowCallback(0, window=3, verbose=False))
    with learn2.no_bar(): learn2.validate(); learn2.get_preds()
    assert isinstance(learn2.loss_func, CrossEntropyLossFlat)
    # start_epoch beyond the fit: a warning, no switch
    learn3 = Learner(dls, nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C)), loss_func=CrossEntropyLossFlat(),
                     cbs=SimilarityWindowCallback(5, window=3, verbose=False))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with learn3.no_bar(), learn3.no_logging(): learn3.fit(2)
    assert any('never switched' in str(o.message) for o in w)
    assert isinstance(learn3.loss_func, CrossEntropyLossFlat) and not hasattr(learn3, "similarity_window")
    # lr_find never switches (it is a throw-away fit)
    learn4 = Learner(dls, nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C)), loss_func=CrossEntropyLossFlat(),
                     cbs=SimilarityWindowCallback(0, window=3, verbose=False))
    with learn4.no_bar(), learn4.no_logging(): learn4.lr_find(num_it=5, show_plot=False)
    assert isinstance(learn4.loss_func, CrossEntropyLossFlat) and not learn4.swrm_switch.switched
    refused(lambda: SimilarityWindowCallback(1, loss='ldam'), contains="loss must be one of")
    refused(lambda: SimilarityWindowCallback(1, prototypes='ema'), contains="prototypes must be")


def test_tabular_refused_before_training():
    "every mistake that would fail at the switch is a ValueError before the first training batch"
    torch.manual_seed(0)
    x, y, vocab, dls = tabular_data(); C, D = TC, TD
    def refused_before_batches(make_learner, contains, fit=lambda learn: learn.fit(4, 1e-2)):
        "The fit raises a ValueError containing `contains` before any training batch"
        batches = TrainingBatches(); learn = make_learner(); learn.add_cb(batches)
        try:
            with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
                warnings.simplefilter('ignore'); fit(learn)
        except ValueError as e: assert contains in str(e), str(e)
        else: raise AssertionError(f'not refused: {contains}')
        eq(batches.n, 0)

    mlp = lambda: nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))
    def swl(cbs, data=None, model=None, loss_func=None):
        return lambda: Learner(data or dls, model or mlp(), loss_func=loss_func or CrossEntropyLossFlat(), cbs=cbs)
    refused_before_batches(swl(SimilarityWindowCallback(2, window=8)), 'window size W must be an integer in 2..C = 2..6, got 8')
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3), model=nn.Sequential(nn.Conv1d(1, 1, 1))), 'pass `layer=`')
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3, layer='5')), "no submodule named '5'")
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3, loss_kwargs=dict(reductio='sum'))), "do not fit loss='swrm'")
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3, loss='dyswrm', loss_kwargs=dict(lr=-1.))), 'lr must be a finite number >= 0')
    refused_before_batches(swl(LossSwitchCallback(2, DySWRMLoss([5] * 5, window=3))), 'built for 5 classes but the data has 6')
    # a class of the vocabulary without training sample, in every mode
    items = list(range(len(x))); n_valid = int(len(x) * 0.25)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).tolist()
    ghost = Datasets(items, tfms=[[x.__getitem__], [lambda i: vocab[y[i]], Categorize(vocab=vocab + ['ghost'])]],
                     splits=[perm[n_valid:], perm[:n_valid]]).dataloaders(bs=8, num_workers=0)
    for cb in (SimilarityWindowCallback(2, window=3), SimilarityWindowCallback(2, window=3, prototypes='last_epoch'),
               SimilarityWindowCallback(2, window=3, loss='dyswrm'), DeferredReweighting(2)):
        refused_before_batches(swl(cb, data=ghost, model=nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C + 1))),
                "class 6 ('ghost') has no sample in the training set")
    # multi-label and regression data: one line, for every callback
    multi = Datasets(items, tfms=[[x.__getitem__], [lambda i: [vocab[y[i]]], MultiCategorize(vocab=vocab), OneHotEncode(C)]],
                     splits=[perm[n_valid:], perm[:n_valid]]).dataloaders(bs=8, num_workers=0)
    regr = Datasets(items, tfms=[[x.__getitem__], [lambda i: float(y[i]), RegressionSetup()]],
                    splits=[perm[n_valid:], perm[:n_valid]]).dataloaders(bs=8, num_workers=0)
    for data, lf in ((multi, BCEWithLogitsLossFlat()), (regr, MSELossFlat())):
        for cb in (SimilarityWindowCallback(2, window=3), SimilarityWindowCallback(2, window=3, loss='dyswrm'), DeferredReweighting(2)):
            refused_before_batches(swl(cb, data=data, loss_func=lf, model=nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C if data is multi else 1))),
                    'SWRM needs single-label classification')
        refused(lambda: class_counts(data), contains='SWRM needs single-label classification')
    # data without a vocabulary: C is the model's output size
    plain = DataLoaders(FDataLoader(TensorDataset(x, y), bs=8, shuffle=True), FDataLoader(TensorDataset(x[:8], y[:8]), bs=8))
    refused_before_batches(swl(SimilarityWindowCallback(2, window=7), data=plain), 'in 2..C = 2..6, got 7')
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3), data=plain, model=nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C + 2))),
            'class 6, 7 has no sample in the training set')
    refused_before_batches(swl(SimilarityWindowCallback(2, window=3), data=plain, model=nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C - 2))),
            'a training target is outside 0..3')
    lp = Learner(plain, mlp(), loss_func=CrossEntropyLossFlat(), cbs=SimilarityWindowCallback(1, window=3, verbose=False))
    with lp.no_bar(), lp.no_logging(): lp.fit(2, 1e-2)  # and it trains when it fits
    assert isinstance(lp.loss_func, SWRMLoss)


def test_similarity_window_callback_refused_at_construction():
    # refusals at construction
    for kw, msg in ((dict(window=0), 'window size W must be an integer in 2..C'), (dict(window=2.5), 'window size W'),
                    (dict(window=True), 'window size W'), (dict(beta=-1.), 'beta must be'), (dict(tau=0.), 'tau must be'),
                    (dict(tau=float('nan')), 'tau must be'), (dict(perplexity=-3), 'perplexity'), (dict(loss='ldam'), 'loss must be one of'),
                    (dict(prototypes='ema'), 'prototypes must be')):
        refused(lambda: SimilarityWindowCallback(1, **kw), contains=msg)
    SimilarityWindowCallback(1, window=np.int64(4), beta=np.float32(2.))  # numpy numbers are numbers
