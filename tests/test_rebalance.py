"""Re-sampling, cRT, tau-normalisation, EQL and CDB-W-CE (swrm_fastai.rebalance) against their reference semantics,
written out here in float64 (Kang et al. 2020, Tan et al. 2020, Sinha et al. 2022), and the standard checks: device,
dtype, bad input, persistence."""
import math, tempfile
from pathlib import Path
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
from scipy.stats import chisquare
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.data.load import DataLoader
from swrm_fastai.test_utils import blobs_dls, blobs_learner, BLOB_COUNTS
from swrm_fastai.rebalance import (sampling_weights, resampled_dl, resampled_dls, DeferredResampling, ClassifierRetraining,
    crt, tau_normalize, choose_tau, TauNormalization, holdout_split, EQLLoss, cdb_weights, ClassDifficultyWeighting,
    SeededWeightedDL)

BIG = [c * 6 for c in BLOB_COUNTS]  # 4242 training items: a few thousand draws per epoch

def epoch_targets(dl):
    "Targets of one epoch of `dl`, batch by batch"
    return torch.cat([yb.as_subclass(torch.Tensor) for _, yb in dl])

def batches(dl): return [(x.as_subclass(torch.Tensor).clone(), y.as_subclass(torch.Tensor).clone()) for x, y in dl]

# ------------------------------------------------------------------------------------------------ re-sampling
@pytest.mark.parametrize('power', [1., .5, 0.])
@pytest.mark.parametrize('seed', [0, 1])
def test_sampled_class_frequencies(power, seed):
    "Over an epoch the classes come up with probability n_c^(1-q) / sum n^(1-q): chi-square, and every class within 4 binomial sd"
    dl = resampled_dl(blobs_dls(BIG, bs=64).train, power, seed=seed)
    y = epoch_targets(dl)
    n = np.asarray(BIG, dtype=np.float64)
    p = n ** (1 - power) / (n ** (1 - power)).sum()
    obs = np.bincount(y.numpy(), minlength=len(n)).astype(np.float64)
    N = obs.sum()
    assert N >= 4000
    assert chisquare(obs, N * p).pvalue > 1e-3
    assert (np.abs(obs - N * p) <= 4 * np.sqrt(N * p * (1 - p))).all()

def test_validation_loader_untouched():
    "resampled_dls and a fit with DeferredResampling leave the validation loader as it was: same object, items, order"
    learn = blobs_learner(cbs=DeferredResampling(0, verbose=False))
    valid, before = learn.dls.valid, batches(learn.dls.valid)
    rdls = resampled_dls(learn.dls, seed=0)
    assert rdls.valid is valid and rdls.loaders[1:] == learn.dls.loaders[1:]
    learn.fit(2, 3e-2)
    assert learn.dls.valid is valid
    after = batches(learn.dls.valid)
    assert len(after) == len(before) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after, before))

def test_resampled_same_data_and_transforms():
    "Same dataset, batch size, transforms and device; the draws depend on the seed only, numpy's global state untouched"
    dls = blobs_dls()
    dl = resampled_dl(dls.train, seed=5)
    assert dl.dataset is dls.train.dataset and dl.bs == dls.train.bs and dl.device == dls.train.device
    assert dl.after_batch.fs == dls.train.after_batch.fs and dl.after_item.fs == dls.train.after_item.fs
    st = np.random.get_state()[1].copy()
    a = epoch_targets(resampled_dl(dls.train, seed=5)); np.random.seed(123)
    b = epoch_targets(resampled_dl(dls.train, seed=5))
    assert torch.equal(a, b)
    np.random.seed(0); st = np.random.get_state()[1].copy(); epoch_targets(dl); assert (np.random.get_state()[1] == st).all()

def test_package_data_keeps_fast_path():
    "The package's IndexedDL gets a WeightedDL that still gathers whole batches"
    from swrm_fastai.data import images_dls, IndexedDL
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(60, 8, 8, generator=g) * 255).byte(), torch.tensor([0] * 40 + [1] * 15 + [2] * 5)
    dls = images_dls(x, y, x[:9], y[:9], ['a', 'b', 'c'], bs=16)
    dl = resampled_dl(dls.train, seed=0)
    assert isinstance(dl, IndexedDL) and isinstance(dl, SeededWeightedDL) and dl._tables() is not None
    xb, yb = dl.one_batch()
    assert xb.shape == (16, 1, 8, 8)

def test_resampling_refusals():
    with pytest.raises(ValueError, match='power must be'): DeferredResampling(0, power=float('inf'))
    with pytest.raises(ValueError, match='start_epoch must be'): DeferredResampling(1.5)
    with pytest.raises(ValueError, match='cannot re-sample a DataLoader'): resampled_dl(DataLoader(list(range(8)), bs=2))
    with pytest.raises(ValueError, match="class 2 has training count 0"): sampling_weights([3, 1, 0], [0, 0, 0, 1])

def test_drs_switch_epoch_and_restore():
    "DRS at 0.5 of 4 epochs: epochs 2 and 3 re-sampled; the original loader back, also after a cancelled fit"
    from fastai.callback.core import Callback, CancelFitException
    kinds = []
    class Seen(Callback):
        def before_train(self): kinds.append(type(self.dl).__name__)
    learn = blobs_learner(cbs=[DeferredResampling(.5, verbose=False), Seen()])
    tr = learn.dls.train
    learn.fit(4, 3e-2)
    assert kinds == ['TfmdDL'] * 2 + ['SeededWeightedDL'] * 2 and learn.dls.train is tr
    class Stop(Callback):
        def after_epoch(self):
            if self.epoch == 2: raise CancelFitException()
    learn.fit(4, 3e-2, cbs=Stop())
    assert learn.dls.train is tr

# ------------------------------------------------------------------------------------------------ cRT
def bn_learner(seed=0):
    dls = blobs_dls(seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(.2), nn.Linear(16, 6))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), lr=3e-2)

def test_crt_trains_only_the_classifier():
    "Body parameters and batch-norm statistics unchanged, the classifier re-initialised (seeded) and trained, flags restored"
    learn = bn_learner(); learn.fit(2, 3e-2)
    learn.model[0].bias.requires_grad_(False)  # a parameter the user froze stays frozen
    body = {k: v.clone() for k, v in learn.model.state_dict().items() if not k.startswith('4.')}
    fc0 = learn.model[4].weight.detach().clone()
    crt(learn, 2, 1e-2, seed=3)
    for k, v in learn.model.state_dict().items():
        if not k.startswith('4.'): assert torch.equal(v, body[k]), k
    assert not torch.equal(learn.model[4].weight, fc0)
    assert [p.requires_grad for p in learn.model.parameters()] == [True, False, True, True, True, True]
    assert learn.dls.train.__class__.__name__ == 'TfmdDL'

def test_crt_seeded():
    "From the same trained state, the same seed gives the same re-trained classifier (init and sampler seeded; body in eval mode)"
    learn = bn_learner(); learn.fit(1, 3e-2)
    st, out = {k: v.clone() for k, v in learn.model.state_dict().items()}, []
    for _ in range(2):
        learn.model.load_state_dict(st); crt(learn, 1, 1e-2, seed=7); out.append(learn.model[4].weight.detach().clone())
    assert torch.equal(*out)

def test_classifier_retraining_lr_schedule():
    "With lr=, the re-training epochs follow a cosine from lr to 0 whatever the fit's schedule; before them, the fit's"
    from fastai.callback.core import Callback
    lrs = []
    class Rec(Callback):
        order = 70
        def before_batch(self):
            if self.training: lrs.append(self.opt.hypers[0]['lr'])
    learn = blobs_learner()
    learn.fit_one_cycle(4, 1e-2, cbs=[ClassifierRetraining(2, lr=.05, verbose=False), Rec()])
    n = len(learn.dls.train)
    ref = [.05 * (1 + math.cos(math.pi * i / (2 * n))) / 2 for i in range(2 * n)]
    assert lrs[2 * n:] == pytest.approx(ref) and max(lrs[:2 * n]) <= 1e-2 + 1e-12

def test_classifier_retraining_refusals():
    dls = blobs_dls()
    learn = Learner(dls, nn.Sequential(nn.Unflatten(1, (2, 1)), nn.Conv1d(2, 6, 1), nn.Flatten()), loss_func=CrossEntropyLossFlat())
    with pytest.raises(ValueError, match='no linear layer'): learn.fit(1, cbs=ClassifierRetraining(0))
    with pytest.raises(ValueError, match='epochs must be'): crt(blobs_learner(), 1.5, 1e-2)

# ------------------------------------------------------------------------------------------------ tau-normalisation
def test_tau_normalize_reference():
    "w_c / ||w_c||^tau in float64 (Kang et al.'s pnorm), the bias dropped"
    torch.manual_seed(0)
    fc = nn.Linear(5, 4).double()
    w = fc.weight.detach().numpy().copy()
    for tau in (0., .3, 1., 1.7):
        f = nn.Linear(5, 4).double(); f.load_state_dict(fc.state_dict())
        tau_normalize(f, tau)
        ref = np.stack([w[c] / np.linalg.norm(w[c]) ** tau for c in range(4)])
        np.testing.assert_allclose(f.weight.detach().numpy(), ref, rtol=1e-12)
        assert (f.bias == 0).all()

def test_choose_tau_reference():
    "The tau with the best balanced accuracy on the passed loader, computed independently from the features"
    learn = blobs_learner(); learn.fit(3, 3e-2)
    dl = blobs_dls(n_valid=25, seed=2).valid
    tau, scores = choose_tau(learn, dl, taus=[0., .5, 1., 1.5, 2.])
    xs = torch.cat([x.as_subclass(torch.Tensor) for x, _ in dl]).double(); ys = torch.cat([y.as_subclass(torch.Tensor) for _, y in dl])
    with torch.no_grad(): feats = learn.model[1](learn.model.double()[0](xs))
    learn.model.float()
    w = learn.model[2].weight.detach().double()
    ref = {}
    for t in [0., .5, 1., 1.5, 2.]:
        p = (feats @ (w / w.norm(dim=1, keepdim=True) ** t).T).argmax(1)
        ref[t] = np.mean([(p[ys == c] == c).double().mean().item() for c in ys.unique()])
    assert scores == pytest.approx(ref, abs=1e-6)
    assert tau == min(t for t in ref if ref[t] == max(ref.values()))

def test_tau_normalization_holdout_split():
    "The model trains on the rest of a seeded stratified split; tau is chosen on the held-out part; the loader is back"
    from fastai.callback.core import Callback
    n_seen = []
    class Count(Callback):
        def before_train(self): n_seen.append(sum(len(b[1]) for b in self.dl))
    learn = blobs_learner()
    cb = TauNormalization(holdout=.2, seed=1, verbose=False)
    learn.fit(1, 3e-2, cbs=[cb, Count()])
    keep, held = holdout_split([c for c, n in enumerate(BLOB_COUNTS) for _ in range(n)], .2, seed=1)
    assert cb.n_held == len(held) == sum(math.floor(.2 * n) for n in BLOB_COUNTS)
    assert n_seen[0] == len(keep) // 64 * 64  # fastai drops the last partial training batch
    assert cb.tau in cb.scores and (learn.model[2].bias == 0).all()
    with pytest.raises(ValueError, match='never the test set'): TauNormalization()

# ------------------------------------------------------------------------------------------------ EQL
C, B = 20, 256
COUNTS = [math.floor(1000 * 100 ** (-c / (C - 1))) for c in range(C)]

def ref_seql(z, y, keep):
    "Tan et al. Eqs. 7-8 in float64: -log(e^{z_y} / sum_k w~_k e^{z_k}), w~ the given 0/1 keep mask (target always kept)"
    w = keep.double()
    return -(z.gather(1, y[:, None]).squeeze(1) - torch.log((w * z.exp()).sum(1)))

@pytest.mark.parametrize('seed', [0, 1])
def test_eql_reference(seed):
    "Loss and gradient equal the float64 reference on the same Bernoulli draws (a twin loss with the same seed draws them)"
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor(COUNTS, dtype=torch.float64), B, replacement=True, generator=g)
    z = torch.randn(B, C, generator=g, dtype=torch.float64).requires_grad_()
    lf, twin = EQLLoss(COUNTS, lambda_=.01, seed=seed), EQLLoss(COUNTS, lambda_=.01, seed=seed)
    ours = lf(z, y)
    keep = twin.keep_mask(y)
    ref = ref_seql(z, y, keep).mean()
    g1, = torch.autograd.grad(ours, z); g2, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(ours.detach().double(), ref.detach(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g1.double(), g2, rtol=1e-6, atol=1e-9)
    assert (g1[~keep] == 0).all()  # a dropped class gets no (suppressing) gradient

def test_eql_draws():
    "Rare negatives (f_k < lambda) dropped with probability gamma (within 4 binomial sd); frequent classes and targets never"
    lf = EQLLoss(COUNTS, lambda_=.01, gamma=.75)
    f = torch.tensor(COUNTS, dtype=torch.float64); rare = f / f.sum() < .01
    assert (lf.rare.bool() == rare).all() and 0 < rare.sum() < C
    y = torch.arange(B) % C
    drops = torch.stack([~lf.keep_mask(y) for _ in range(20)])
    is_t = F.one_hot(y, C).bool()[None].expand_as(drops)
    assert not drops[:, :, ~rare].any() and not drops[is_t].any()
    cand = (~is_t) & rare[None, None]
    k, n = drops[cand].sum().item(), cand.sum().item()
    assert abs(k / n - .75) <= 4 * math.sqrt(.75 * .25 / n)

def test_eql_dtype_and_refusals():
    y = torch.tensor([0, 5, 19, 3])
    for dt in (torch.float16, torch.bfloat16):
        out = EQLLoss(COUNTS)(torch.randn(4, C).to(dt).requires_grad_(), y)
        assert out.dtype == torch.float32 and out.isfinite()
    with pytest.raises(ValueError, match='targets must be class indices in 0..19'): EQLLoss(COUNTS)(torch.randn(4, C, requires_grad=True), torch.tensor([0, 1, 2, 20]))
    with pytest.raises(ValueError, match='non-finite'): EQLLoss(COUNTS)(torch.full((4, C), float('nan'), requires_grad=True), y)
    with pytest.raises(ValueError, match='gamma must be'): EQLLoss(COUNTS, gamma=-.1)
    with pytest.raises(ValueError, match='class 1'): EQLLoss([5, 0, 3])

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_eql_device():
    "The loss follows the logits to the GPU and draws the same masks as on the CPU"
    y = torch.arange(8) % C
    a, b = EQLLoss(COUNTS, lambda_=.01), EQLLoss(COUNTS, lambda_=.01)
    z = torch.randn(8, C, requires_grad=True)
    out = b(z.detach().cuda().requires_grad_(), y.cuda())
    assert out.device.type == 'cuda' and all(t.device.type == 'cuda' for t in b.buffers())
    torch.testing.assert_close(out.cpu(), a(z, y))

def test_eql_persistence():
    "learn.save/load and learn.export keep the loss, its draw counter and its settings"
    learn = blobs_learner(loss_func=EQLLoss(BLOB_COUNTS, lambda_=.05, gamma=.6, seed=4)); learn.fit(1, 3e-2)
    with tempfile.TemporaryDirectory() as d:
        learn.path = Path(d)
        learn.export('m.pkl'); back = load_learner(Path(d) / 'm.pkl').loss_func
        learn.save('m'); learn2 = blobs_learner(); learn2.path = Path(d); learn2.load('m')
    n = learn.loss_func.n_draws
    ref = EQLLoss(BLOB_COUNTS, lambda_=.05, gamma=.6, seed=4); ref.n_draws = n
    nxt = ref.keep_mask(torch.arange(6))
    for lf in (back, learn2.loss_func):
        assert type(lf) is EQLLoss and lf.n_draws == n == len(learn.dls.train) and lf.gamma_eql == .6 and lf.seed == 4
        assert torch.equal(lf.keep_mask(torch.arange(6)), nxt)  # a resumed fit draws what the original would have drawn

# ------------------------------------------------------------------------------------------------ CDB-W-CE
def ref_cdb(acc, tau='dynamic'):
    "Sinha et al. (their code): tau = 2 sigmoid(max A / (min A + 0.01) - 1); w = (1 - A)^tau, normalised to sum C"
    a = np.asarray(acc, dtype=np.float64)
    if tau == 'dynamic': tau = 2 / (1 + np.exp(-(a.max() / (a.min() + .01) - 1)))
    w = (1 - a) ** tau
    return w / w.sum() * len(a), tau

@pytest.mark.parametrize('acc', [[.9, .5, .1, .0], [.99, .98, .97, .2], [.3, .3, .3, .3]])
@pytest.mark.parametrize('tau', ['dynamic', 1., 2.5])
def test_cdb_weights_reference(acc, tau):
    w, t = cdb_weights(acc, tau)
    rw, rt = ref_cdb(acc, tau)
    np.testing.assert_allclose(w.numpy(), rw, rtol=1e-6); assert t == pytest.approx(rt)

def test_cdb_callback_on_validation_split():
    "With dl=, the accuracies are those of the model on that loader after the epoch, and the loss's weights follow them"
    dl = blobs_dls(n_valid=20, seed=3).valid
    learn = blobs_learner(cbs=ClassDifficultyWeighting(dl=dl)); learn.fit(2, 3e-2)
    cb = learn.class_difficulty_weighting
    p, y = learn.get_preds(dl=dl); p, y = p.argmax(1), y.as_subclass(torch.Tensor)
    acc = [(p[y == c] == c).double().mean().item() for c in range(6)]
    np.testing.assert_allclose(cb.history[-1]['accuracy'], acc)
    np.testing.assert_allclose(learn.loss_func.weight.numpy(), ref_cdb(acc)[0], rtol=1e-6)
    # the weighted loss is (1/B) sum_b w_y CE (the authors' CIFAR-LT code)
    z, t = torch.randn(7, 6, dtype=torch.float64, requires_grad=True), torch.tensor([0, 1, 2, 3, 4, 5, 0])
    ref = (torch.tensor(ref_cdb(acc)[0])[t] * F.cross_entropy(z, t, reduction='none')).mean()
    torch.testing.assert_close(learn.loss_func(z, t).double(), ref, rtol=1e-6, atol=1e-9)

def test_cdb_persistence_and_refusals():
    learn = blobs_learner(cbs=ClassDifficultyWeighting()); learn.fit(1, 3e-2)
    w = learn.loss_func.weight.clone()
    with tempfile.TemporaryDirectory() as d:
        learn.path = Path(d); learn.save('m'); learn2 = blobs_learner(); learn2.path = Path(d); learn2.load('m')
    assert torch.equal(learn2.loss_func.weight, w)
    with pytest.raises(ValueError, match='not both'): ClassDifficultyWeighting(dl=1, holdout=.1)
    with pytest.raises(ValueError, match='fraction in'): ClassDifficultyWeighting(holdout=1.)
