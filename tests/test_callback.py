"Integration tests of the two-stage callbacks on a tiny long-tailed image folder with a real (untrained) resnet18"
import copy, warnings
import numpy as np, pytest, torch, torch.nn as nn
from PIL import Image
from fastai.vision.all import (vision_learner, resnet18, ImageDataLoaders, DataBlock, ImageBlock, CategoryBlock,
                               get_image_files, parent_label, GrandparentSplitter, Callback, CrossEntropyLossFlat,
                               MixUp, Flip, load_learner, Learner)
from fastai.callback.progress import no_bar  # noqa: F401
from swrm_fastai.similarity import SimilarityWindow, embed_1d, swr_weights, swm_margins
from swrm_fastai.losses import SWRMLoss, DySWRMLoss, ClassBalancedLoss
from swrm_fastai.callback import SimilarityWindowCallback, DeferredReweighting, class_prototypes

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
    sw, captured = learn.similarity_window, learn.swrm_switch.prototypes_
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
    assert cb.prototypes_.shape == (10, 512) and cb._hook is None  # resnet18 head: 512 features into the last Linear

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
    assert resumed.loss_func is loaded and cb.switched and cb.prototypes_ is None
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
    if augment: assert not torch.allclose(cb.prototypes_, plain, rtol=1e-4, atol=1e-5)
    else: torch.testing.assert_close(cb.prototypes_, plain, rtol=1e-4, atol=1e-5)

def test_dyswrm_and_drw(img_path):
    # the paper's DySWRM: its own seeded start, no similarity window from prototypes
    learn = make_learner(img_path, cbs=SimilarityWindowCallback(start_epoch=0, window=5, loss='dyswrm', verbose=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert isinstance(learn.loss_func, DySWRMLoss) and int(learn.loss_func.n_steps) > 0
    assert getattr(learn, 'similarity_window', None) is None and learn.swrm_switch.prototypes_ is None
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
    assert isinstance(learn.loss_func, SWRMLoss) and learn.swrm_switch.prototypes_.shape == (10, 10)

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
