"Integration tests of swrm_fastai.interpret on a tiny trained learner: tables against get_preds, load_learner, package losses, plots"
import os
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from fastai.data.core import Datasets
from fastai.data.transforms import Categorize, ItemGetter, IndexSplitter
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.progress import ProgressCallback
from fastai.interpret import ClassificationInterpretation

from swrm_fastai import losses as L
from swrm_fastai import test_utils as tu
from swrm_fastai.similarity import SimilarityWindow
from swrm_fastai.interpret import (tail_confusion_table, compare_confusions, shot_accuracy_table, plot_lt_confusion_matrix,
                                   plot_class_weights, TAIL_COLUMNS, learner_counts, learner_window)

COUNTS = [300, 200, 150, 40, 12, 5]  # many, many, many, medium, few, few
N_TEST = 30
NAMES = [f'class{c}' for c in range(6)]


def blob_items(seed=0):
    "Long-tailed 2-D Gaussian blobs: (x, label, split) with COUNTS training and N_TEST test samples per class"
    return tu.blob_items(COUNTS, N_TEST, seed)


def blobs_learner(loss_func=None, seed=0, epochs=6):
    learn = tu.blobs_learner(COUNTS, N_TEST, seed, loss_func=loss_func)
    learn.remove_cb(ProgressCallback)
    with learn.no_logging(): learn.fit(epochs)
    return learn


@pytest.fixture(scope='module')
def learn(): return blobs_learner()


def expected_rows(probs, targs, counts, many=100):
    "Reference Table 1 rows computed with plain Python from predictions: (true, pred, n, pct), sorted by pct"
    dec, t = probs.argmax(1).tolist(), targs.tolist()
    C = len(counts); rows = []
    for tc in range(C):
        for pc in range(C):
            k = sum(1 for a, b in zip(t, dec) if a == tc and b == pc)
            if counts[tc] <= many and counts[pc] > many and k > 0: rows.append((NAMES[tc], NAMES[pc], k, 100 * k / t.count(tc)))
    return sorted(rows, key=lambda o: -o[3])


def check_table(tab, rows):
    assert list(tab.columns) == TAIL_COLUMNS
    assert tab[['true', 'pred', 'n']].values.tolist() == [list(o[:3]) for o in rows]
    np.testing.assert_allclose(tab.pct.to_numpy(float), [o[3] for o in rows])


def png_ok(ax, tmp_path, name='plot.png'):
    f = tmp_path / name
    ax.figure.savefig(f)
    plt.close(ax.figure)
    return os.path.getsize(f) > 1000


def test_hand_built_table_and_compare():
    cm = np.array([[9, 0, 0, 0, 1], [0, 10, 0, 0, 0], [4, 1, 5, 0, 0], [0, 2, 3, 5, 0], [0, 0, 0, 0, 10]])
    counts, names = [500, 200, 50, 10, 5], list('abcde')
    tab = tail_confusion_table(cm, counts, names)
    assert tab[['true', 'true_count', 'pred', 'pred_count', 'n']].values.tolist() == [
        ['c', 50, 'a', 500, 4], ['d', 10, 'b', 200, 2], ['c', 50, 'b', 200, 1]]
    np.testing.assert_allclose(tab.pct, [40., 20., 10.])
    cm_b = np.array([[10, 0, 0, 0, 0], [0, 10, 0, 0, 0], [1, 1, 8, 0, 0], [0, 3, 1, 6, 0], [0, 1, 0, 0, 9]])
    cmp = compare_confusions(tab, cm_b, labels=('CE', 'SWRM'))
    np.testing.assert_allclose(cmp.pct_CE, [40., 20., 10.])
    np.testing.assert_allclose(cmp.pct_SWRM, [10., 30., 10.])
    np.testing.assert_allclose(cmp.change, [-30., 10., 0.])
    empty = tail_confusion_table(np.diag([10] * 5), counts, names)
    assert len(empty) == 0 and list(empty.columns) == TAIL_COLUMNS
    assert list(compare_confusions(empty, cm_b, labels=('CE', 'SWRM')).columns) == list(cmp.columns)


def test_tail_confusions_match_get_preds(learn):
    interp = ClassificationInterpretation.from_learner(learn)
    probs, targs = learn.get_preds(dl=interp.dl)
    rows = expected_rows(probs, targs, COUNTS)
    assert rows, "the blobs are built so that tail classes are confused with head classes"
    # counts default to the learner's training counts
    np.testing.assert_array_equal(learner_counts(learn).numpy(), COUNTS)
    check_table(interp.tail_confusions(top=None), rows)
    check_table(interp.tail_confusions(top=2), rows[:2])
    # fastai's own confusion matrix agrees with ours
    np.testing.assert_array_equal(interp.lt_confusion_matrix(), interp.confusion_matrix())
    # shot accuracy agrees with a direct computation
    sa = interp.shot_accuracy()
    dec = probs.argmax(1)
    per = [(dec[targs == c] == c).float().mean().item() for c in range(6)]
    np.testing.assert_allclose(sa.loc[NAMES, 'accuracy'], per, rtol=1e-6)
    np.testing.assert_allclose(sa.loc['overall', 'accuracy'], (dec == targs).float().mean().item(), rtol=1e-6)
    np.testing.assert_allclose(sa.loc['many', 'accuracy'], np.mean(per[:3]), rtol=1e-6)
    np.testing.assert_allclose(sa.loc['few', 'accuracy'], np.mean(per[4:]), rtol=1e-6)


def test_compare_two_learners(learn):
    other = blobs_learner(L.BalancedSoftmaxLoss(COUNTS), seed=0)
    i_a, i_b = ClassificationInterpretation.from_learner(learn), ClassificationInterpretation.from_learner(other)
    cmp = i_a.tail_confusions(top=None, compare=i_b, labels=('CE', 'BS'))
    pa, t = learn.get_preds(dl=i_a.dl)
    pb, tb = other.get_preds(dl=i_b.dl)
    assert torch.equal(t, tb)
    rows = expected_rows(pa, t, COUNTS)
    assert cmp[['true', 'pred']].values.tolist() == [list(o[:2]) for o in rows]
    db = pb.argmax(1)
    pct_b = [100 * ((t == NAMES.index(a)) & (db == NAMES.index(b))).sum().item() / N_TEST for a, b, *_ in rows]
    np.testing.assert_allclose(cmp.pct_CE, [o[3] for o in rows])
    np.testing.assert_allclose(cmp.pct_BS, pct_b)
    np.testing.assert_allclose(cmp.change, np.array(pct_b) - np.array([o[3] for o in rows]))


def test_load_learner(learn, tmp_path):
    learn.path = tmp_path
    learn.export('blobs.pkl')
    learn2 = load_learner(tmp_path / 'blobs.pkl')
    valid = [o for o in blob_items(0) if o[2] == 1]
    dl = learn2.dls.test_dl(valid, with_labels=True)
    interp2 = ClassificationInterpretation.from_learner(learn2, dl=dl)
    interp = ClassificationInterpretation.from_learner(learn)
    # plain cross-entropy does not know the counts and the exported learner has no training set
    with pytest.raises(ValueError, match='pass counts='): interp2.tail_confusions()
    probs, targs = learn2.get_preds(dl=dl)
    check_table(interp2.tail_confusions(counts=COUNTS, top=None), expected_rows(probs, targs, COUNTS))
    assert interp2.tail_confusions(counts=COUNTS).equals(interp.tail_confusions())
    assert png_ok(interp2.plot_lt_confusion_matrix(counts=COUNTS), tmp_path)
    # without dl=, from_learner takes the exported learner's validation set, which is empty: say what to pass
    empty = ClassificationInterpretation.from_learner(learn2)
    with pytest.raises(ValueError, match=r'no data: .*test_dl\(items, with_labels=True\)'): empty.tail_confusions(counts=COUNTS)


def test_compare_labels_from_losses(learn):
    "tail_confusions(compare=...) names the columns after each model's loss; equal losses or a bare matrix need labels="
    i_ce = ClassificationInterpretation.from_learner(learn)
    i_bs = ClassificationInterpretation.from_learner(blobs_learner(L.BalancedSoftmaxLoss(COUNTS)))
    cmp = i_ce.tail_confusions(top=None, compare=i_bs)
    assert list(cmp.columns[-3:]) == ['pct_CE', 'pct_BalancedSoftmax', 'change']
    assert list(i_bs.tail_confusions(top=None, compare=i_ce).columns[-3:]) == ['pct_BalancedSoftmax', 'pct_CE', 'change']
    with pytest.raises(ValueError, match='both models trained with CE'): i_ce.tail_confusions(compare=i_ce)
    with pytest.raises(ValueError, match='confusion matrix: name the two models'): i_ce.tail_confusions(compare=i_bs.lt_confusion_matrix())
    assert list(i_ce.tail_confusions(compare=i_ce, labels=('a', 'b')).columns[-3:]) == ['pct_a', 'pct_b', 'change']


def blob_window(): return SimilarityWindow(COUNTS, torch.tensor([0., 3., 6., 1., 4., 7.]), window=3, names=NAMES)


def package_losses():
    "One instance of every long-tail loss of the package (built on the blob counts)"
    sw = blob_window()
    return {'swrm': L.SWRMLoss.from_window(sw), 'swr': L.SWRMLoss.from_window(sw, variant='swr'),
            'swm': L.SWRMLoss.from_window(sw, variant='swm'), 'dyswrm': L.DySWRMLoss(COUNTS, window=3),
            'cb': L.ClassBalancedLoss(COUNTS), 'ldam': L.LDAMLoss(COUNTS), 'la': L.LogitAdjustedLoss(COUNTS),
            'bs': L.BalancedSoftmaxLoss(COUNTS)}


@pytest.mark.parametrize('name', ['swrm', 'swr', 'swm', 'dyswrm', 'cb', 'ldam', 'la', 'bs'])
def test_package_losses(learn, name, tmp_path):
    "Interpretation of a learner with each package loss (activation/decodes kept), also after load_learner"
    losses = package_losses()
    assert sorted(losses) == sorted(['swrm', 'swr', 'swm', 'dyswrm', 'cb', 'ldam', 'la', 'bs'])
    loss = losses[name]
    learn.loss_func = loss
    # SWRM/SWR/SWM losses hold weights and margins only; the learner keeps the window (as SimilarityWindowCallback does)
    if name in ('swrm', 'swr', 'swm'): learn.similarity_window = blob_window()
    try:
        interp = ClassificationInterpretation.from_learner(learn)
        np.testing.assert_array_equal(interp.lt_confusion_matrix(), interp.confusion_matrix())
        probs, targs = learn.get_preds(dl=interp.dl)
        rows = expected_rows(probs, targs, COUNTS)
        check_table(interp.tail_confusions(top=None), rows)
        learn.path = tmp_path
        learn.export('l.pkl')
    finally:
        learn.loss_func = CrossEntropyLossFlat()
        if hasattr(learn, 'similarity_window'): del learn.similarity_window
    learn2 = load_learner(tmp_path / 'l.pkl')
    dl = learn2.dls.test_dl([o for o in blob_items(0) if o[2] == 1], with_labels=True)
    interp2 = ClassificationInterpretation.from_learner(learn2, dl=dl)
    np.testing.assert_array_equal(interp2.lt_confusion_matrix(), interp2.confusion_matrix())
    # every package loss knows its training counts: no counts= needed after load_learner
    check_table(interp2.tail_confusions(top=None), rows)


def test_plots(learn, tmp_path):
    interp = ClassificationInterpretation.from_learner(learn)
    ax = interp.plot_lt_confusion_matrix()
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ['class0 (300)', 'class1 (200)']
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == 'class5 (5)'
    assert png_ok(ax, tmp_path)
    # no similarity window yet: a clear error
    with pytest.raises(ValueError, match='no similarity window'): interp.plot_similarity_window()
    learn.similarity_window = blob_window()
    try:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        assert interp.plot_similarity_window(ax=a1) is a1
        assert interp.plot_class_weights(ax=a2) is a2
        assert [t.get_text() for t in a2.get_xticklabels()][0] == 'class0 (300)'
        np.testing.assert_allclose(a2.lines[0].get_ydata(),
                                   (learn.similarity_window.weights / learn.similarity_window.weights.mean()).numpy(), rtol=1e-5)
        assert png_ok(a1, tmp_path, 'two.png')
    finally:
        del learn.similarity_window
    # a DySWRM loss's current window is reachable too
    learn.loss_func = L.DySWRMLoss(COUNTS, window=3)
    try:
        assert learner_window(learn).window == 3
        assert png_ok(interp.plot_similarity_window(), tmp_path, 'dy.png')
        assert png_ok(interp.plot_class_weights(), tmp_path, 'dyw.png')
    finally:
        learn.loss_func = CrossEntropyLossFlat()
    # C = 100 renders with thinned labels and no per-cell text
    g = torch.Generator().manual_seed(0)
    cm = torch.randint(0, 4, (100, 100), generator=g) + torch.diag(torch.full((100,), 40))
    counts = [int(500 * 100 ** (-c / 99)) for c in range(100)]
    ax = plot_lt_confusion_matrix(cm, counts, [f'c{i}' for i in range(100)])
    assert len(ax.texts) == 0 and 2 <= len(ax.get_xticklabels()) <= 30
    assert png_ok(ax, tmp_path, 'c100.png')
    ax = plot_class_weights(counts, torch.randn(100, generator=g), window=15)
    assert png_ok(ax, tmp_path, 'w100.png')


def long_tailed_blobs(C, dim=8, seed=0, missing=None):
    "C classes of Gaussian blobs in `dim` dimensions, 2..100 training samples (exponential profile), 2 validation samples per class but none for `missing`"
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, dim, generator=g) * 3
    names = [f'class_{c}' for c in range(C)]
    counts = [max(2, int(100 * 50 ** (-c / (C - 1)))) for c in range(C)]
    items = []
    for split, per in ((0, counts), (1, [0 if c == missing else 2 for c in range(C)])):
        for c, k in enumerate(per): items += [(centres[c] + torch.randn(dim, generator=g), names[c], split) for _ in range(k)]
    valid = [i for i, o in enumerate(items) if o[2] == 1]
    dsets = Datasets(items, [[ItemGetter(0)], [ItemGetter(1), Categorize(vocab=names)]], splits=IndexSplitter(valid)(items))
    return dsets.dataloaders(bs=64, shuffle=True, seed=seed), counts


@pytest.mark.parametrize('C', [10, 100])
def test_plots_readable(C, tmp_path):
    "A trained SWRM learner at C=10 and C=100, one class without validation sample: the window and confusion plots are readable"
    from swrm_fastai.callback import SimilarityWindowCallback
    from swrm_fastai.similarity import text_problems
    dls, counts = long_tailed_blobs(C, missing=C // 2)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, C)), loss_func=CrossEntropyLossFlat(), lr=1e-2,
                    cbs=SimilarityWindowCallback(1, window=3 if C == 10 else 15, verbose=False))
    learn.remove_cb(ProgressCallback)
    with learn.no_logging(): learn.fit(2)
    interp = ClassificationInterpretation.from_learner(learn)
    out = os.environ.get('SWRM_PNG_DIR')  # set it to keep the PNGs and look at them
    for name, ax in (('window', interp.plot_similarity_window()), ('confusion', interp.plot_lt_confusion_matrix())):
        assert text_problems(ax) == [], (name, text_problems(ax))
        if name == 'window':
            labels = [t.get_text() for t in ax.get_yticklabels()]
            assert len(labels) == C and len(set(labels)) == C  # every class has its own labelled row
        else:
            img = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
            row = list(np.argsort(-np.array(counts), kind='stable')).index(C // 2)
            assert np.isnan(img[row]).all() and 'grey rows: 1 class without validation sample' in ax.get_title()
        if out: ax.figure.savefig(os.path.join(out, f'{name}_C{C}.png'), dpi=100)
        assert png_ok(ax, tmp_path, f'{name}{C}.png')
    # shot_accuracy counts only the classes with validation samples
    report = interp.shot_accuracy(many=50, few=10)
    assert report.loc['overall', 'n_classes'] == C - 1 and report.loc[f'class_{C // 2}', 'n_classes'] == 0
    assert np.isnan(report.loc[f'class_{C // 2}', 'accuracy'])
    # an empty tail table says why
    with pytest.warns(UserWarning, match='no tail class under the thresholds: every class has more than many=1'):
        assert len(interp.tail_confusions(many=1, few=1)) == 0
