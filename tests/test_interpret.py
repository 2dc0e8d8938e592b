"Integration tests of swrm_fastai.interpret on a tiny trained learner: tables against get_preds, load_learner, package losses, plots"
import os, warnings
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
from fastcore.test import test_eq as eq, test_close as close, test_fail as refused
from swrm_fastai.similarity import text_problems
from swrm_fastai.interpret import shot_report, SHOT_COLUMNS, row_percent
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


# The hand-built case of the notebook: classes a, b are head (500, 200 images), c medium, d, e few; cm5[true, pred].
NAMES5, COUNTS5 = ['a', 'b', 'c', 'd', 'e'], [500, 200, 50, 10, 5]
CM5 = np.array([[9, 0, 0, 0, 1], [0, 10, 0, 0, 0], [4, 1, 5, 0, 0], [0, 2, 3, 5, 0], [0, 0, 0, 0, 10]])

def hand_built():
    "`cm5, counts5, names5` and the decoded predictions/targets `preds5, targs5` with that confusion matrix"
    targs5 = torch.tensor(sum([[t] * int(CM5[t].sum()) for t in range(5)], []))
    preds5 = torch.tensor(sum([[p] * int(CM5[t, p]) for t in range(5) for p in range(5)], []))
    return CM5.copy(), list(COUNTS5), list(NAMES5), preds5, targs5


def test_tail_confusion_table_hand_built():
    "columns, rows, percentages per true class, top/min_pct, ties, default names"
    cm5, counts5, names5, _, _ = hand_built()
    tab5 = tail_confusion_table(cm5, counts5, names5)
    eq(list(tab5.columns), TAIL_COLUMNS)
    eq(tab5[['true', 'pred', 'n']].values.tolist(), [['c', 'a', 4], ['d', 'b', 2], ['c', 'b', 1]])
    close(tab5.pct.values, [40., 20., 10.])
    eq(tab5.true_count.tolist(), [50, 10, 50]); eq(tab5.pred_count.tolist(), [500, 200, 200])
    eq(tab5.true_shot.tolist(), ['medium', 'few', 'medium'])
    eq(tab5.true_idx.tolist(), [2, 3, 2]); eq(tab5.pred_idx.tolist(), [0, 1, 1])
    # top and min_pct
    eq(tail_confusion_table(cm5, counts5, names5, top=1)[['true', 'pred']].values.tolist(), [['c', 'a']])
    eq(tail_confusion_table(cm5, counts5, names5, min_pct=15)[['true', 'pred']].values.tolist(), [['c', 'a'], ['d', 'b']])
    eq(len(tail_confusion_table(cm5, counts5, names5, top=None)), 3)
    # percentages are per true class even when the test set is not balanced
    cm_unb = cm5.copy(); cm_unb[2] *= 3
    close(tail_confusion_table(cm_unb, counts5, names5).pct.values, [40., 20., 10.])
    # ties keep class order; default names are indices
    tie = tail_confusion_table(np.array([[5, 0, 0], [0, 5, 0], [1, 1, 2]]), [300, 200, 5])
    eq(tie[['true', 'pred']].values.tolist(), [['2', '0'], ['2', '1']]); close(tie.pct.values, [25., 25.])


def test_tail_confusion_table_empty_and_refused():
    "an empty table says why (warning and attrs['reason']); bad arguments are refused"
    cm5, counts5, names5, _, _ = hand_built()
    # thresholds are parameters: with many=1000 there is no head class at all
    # no tail-to-head confusion -> empty table with the right columns
    # an empty table says why (a warning and attrs['reason']), naming the thresholds
    for kw, why in ((dict(cm=np.diag([5, 5, 5, 5, 5])), 'no test sample of a tail class was predicted as a head class'),
                    (dict(many=1000), 'no head class: no class has more than many=1000 training samples (the largest has 500)'),
                    (dict(many=2, few=2), 'no tail class under the thresholds: every class has more than many=2 training samples'),
                    (dict(min_pct=50), 'no tail-to-head confusion reaches min_pct=50%')):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            empty = tail_confusion_table(kw.pop('cm', cm5), counts5, names5, **kw)
        eq(len(empty), 0); eq(list(empty.columns), TAIL_COLUMNS)
        assert why in empty.attrs['reason'] and any(why in str(o.message) for o in w), (why, empty.attrs)
    assert 'few=3' in tail_confusion_table(cm5, counts5, names5, many=4, few=3).attrs['reason']
    with warnings.catch_warnings():
        warnings.simplefilter('error'); tail_confusion_table(cm5, counts5, names5)  # a table with rows: no warning
    refused(lambda: tail_confusion_table(cm5, counts5[:4], names5), contains="there are 5 classes")
    refused(lambda: tail_confusion_table(cm5, counts5, names5[:4]), contains="4 names given for 5 classes")
    refused(lambda: tail_confusion_table(cm5, [500, 200, 0, 10, 5], names5), contains="class 2 ('c') has training count 0")
    refused(lambda: tail_confusion_table(cm5, counts5, top=0), contains="top must be")
    refused(lambda: tail_confusion_table(cm5, counts5, top=2.5), contains="top must be")
    eq(len(tail_confusion_table(cm5, counts5, top=np.int64(2), min_pct=np.float32(5))), 2)
    refused(lambda: tail_confusion_table(cm5, [500, 200, 0, 10, 5], names5[:2]), contains="2 names given for 5 classes")
    refused(lambda: tail_confusion_table(cm5, counts5, min_pct=120), contains="min_pct")


def test_shot_report_hand_built():
    "per-class and per-group accuracies of the hand-built case, scores, empty groups and classes without validation sample"
    cm5, counts5, names5, preds5, targs5 = hand_built()
    sa5 = shot_report(preds5, targs5, counts5, names5)
    eq(list(sa5.columns), SHOT_COLUMNS); eq(list(sa5.index), ['overall', 'many', 'medium', 'few'] + names5)
    close(sa5.loc[names5, 'accuracy'].values, [0.9, 1.0, 0.5, 0.5, 1.0])
    close(sa5.loc['overall', 'accuracy'], 39 / 50)
    close(sa5.loc['many', 'accuracy'], 0.95); close(sa5.loc['medium', 'accuracy'], 0.5)
    close(sa5.loc['few', 'accuracy'], 0.75)
    eq(sa5.loc[['many', 'medium', 'few'], 'n_classes'].tolist(), [2, 1, 2])
    eq(sa5.loc[['overall', 'many', 'few'], 'train_count'].tolist(), [765, 700, 15])
    eq(sa5.group.tolist(), ['all', 'many', 'medium', 'few', 'many', 'many', 'medium', 'few', 'few'])
    eq(sa5.n_valid.tolist(), [50, 20, 10, 20, 10, 10, 10, 10, 10])
    # scores give the same table; an empty group is NaN, not 0
    eq(shot_report(torch.nn.functional.one_hot(preds5, 5).float(), targs5, counts5, names5), sa5)
    no_few = shot_report(preds5, targs5, [500, 200, 50, 30, 25])
    assert np.isnan(no_few.loc['few', 'accuracy']) and no_few.loc['few', 'n_classes'] == 0
    refused(lambda: shot_report(preds5, targs5, counts5, names5[:3]), contains="3 names given for 5 classes")
    # a class without validation sample: missing (NaN), not counted in n_classes, left out of its group's mean
    keep = targs5 != 3
    sa_m = shot_report(preds5[keep], targs5[keep], counts5, names5)
    assert np.isnan(sa_m.loc['d', 'accuracy']) and sa_m.loc['d', 'n_classes'] == 0 and sa_m.loc['d', 'n_valid'] == 0
    eq(sa_m.loc[['overall', 'many', 'medium', 'few'], 'n_classes'].tolist(), [4, 2, 1, 1])
    close(sa_m.loc['few', 'accuracy'], 1.0)  # only 'e' scored
    eq(sa_m.loc['few', 'train_count'], 15)


def test_plot_lt_confusion_matrix_hand_built(tmp_path):
    "head first whatever the class order, thinned labels at C = 100, missing classes grey, no overlapping text"
    cm5, counts5, names5, _, _ = hand_built()
    ax = plot_lt_confusion_matrix(cm5[::-1, ::-1], counts5[::-1], names5[::-1])
    assert png_ok(ax, tmp_path)
    # head first: the first tick is the most frequent class, whatever the class order
    eq([t.get_text() for t in ax.get_xticklabels()], ['a (500)', 'b (200)', 'c (50)', 'd (10)', 'e (5)'])
    eq([t.get_text() for t in ax.get_yticklabels()], ['a (500)', 'b (200)', 'c (50)', 'd (10)', 'e (5)'])
    img = ax.images[0].get_array()
    close(np.asarray(img), row_percent(cm5) / 100)
    # C = 100: thinned labels, no per-cell text
    g = torch.Generator().manual_seed(0)
    cm100 = torch.randint(0, 5, (100, 100), generator=g) + torch.diag(torch.full((100,), 50))
    counts100 = [int(500 * 100 ** (-c / 99)) for c in range(100)]
    fig, axs = plt.subplots(1, 2, figsize=(12, 6))
    ax = plot_lt_confusion_matrix(cm100, counts100, [f'class{i}' for i in range(100)], ax=axs[1])
    assert ax is axs[1] and len(ax.texts) == 0 and len(ax.get_xticklabels()) <= 30
    assert png_ok(ax, tmp_path)
    refused(lambda: plot_lt_confusion_matrix(cm5, counts5[:3]), contains="there are 5 classes")
    # a class without validation image is missing (NaN, grey, '–'), not 0.00, and the title says so
    cm_miss = cm5.copy(); cm_miss[3] = 0
    for norm in (True, False):
        ax = plot_lt_confusion_matrix(cm_miss, counts5, names5, normalize=norm)
        img = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
        assert np.isnan(img[3]).all() and not np.isnan(np.delete(img, 3, 0)).any()
        eq([t.get_text() for t in ax.texts[15:20]], ['–'] * 5)
        assert 'grey rows: 1 class without validation sample (missing, not 0)' in ax.get_title()
        eq(text_problems(ax), [])
        plt.close(ax.figure)
    # readable at C = 10 and C = 100, with a missing class
    for Cn in (10, 100):
        cmn = torch.randint(0, 5, (Cn, Cn), generator=g) + torch.diag(torch.full((Cn,), 50)); cmn[Cn // 2] = 0
        ax = plot_lt_confusion_matrix(cmn, [int(500 * 100 ** (-c / (Cn - 1))) for c in range(Cn)], [f'class{i}' for i in range(Cn)])
        eq(text_problems(ax), []); assert 'grey rows: 1 class' in ax.get_title()
        plt.close(ax.figure)

def _figure3_interp(C=6, per=4, probs=None):
    "An interpretation on test images that each hold one grey level (10 * item + 5), with hand-made predictions"
    from swrm_fastai.data import images_dls
    y_test = np.repeat(np.arange(C), per)
    x_test = (10 * np.arange(len(y_test)) + 5).astype(np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    x_train, y_train = np.zeros((C, 8, 8), np.uint8), np.arange(C)
    dls = images_dls(x_train, y_train, x_test, y_test, [f'c{i}' for i in range(C)], bs=8, batch_tfms=[], stats=([0.], [1.]),
                     device='cpu')
    learn = Learner(dls, nn.Linear(1, C), loss_func=CrossEntropyLossFlat())
    interp = ClassificationInterpretation(learn, dls.valid, losses=None)
    interp._lt_preds = (probs, torch.as_tensor(y_test), probs.argmax(1))
    return interp

def _drawn_items(ax):
    "The test item an axis shows, read back from its grey level"
    a = np.asarray(ax.images[0].get_array(), dtype=float)
    return int(round((a.mean() - 5) / 10))

def test_plot_tail_confusions_draws_the_right_images():
    "Figure 3 on a hand-made confusion: each row shows the tail items taken for the head class, then the head's own"
    from swrm_fastai.interpret import tail_confusion_examples
    C, per = 6, 4
    probs = torch.full((C * per, C), .01)
    for i in range(C * per): probs[i, i // per] = .5          # every item right by default
    probs[12, 0], probs[13, 0] = .9, .6                          # class 3 (tail) items 12, 13 taken for class 0 (head)
    probs[20, 1] = .8                                            # class 5 item 20 taken for class 1
    probs[1, 0], probs[2, 0] = .95, .7                           # class 0's most confident items: 1, 2, then 0, 3
    counts = [300, 200, 50, 10, 5, 3]
    interp = _figure3_interp(C, per, probs)
    tab = interp.tail_confusions(counts, top=5)
    eq([(r.true_idx, r.pred_idx) for r in tab.itertuples()], [(3, 0), (5, 1)])
    mis, typ = tail_confusion_examples(probs, torch.as_tensor(np.repeat(np.arange(C), per)), 3, 0, n=3)
    eq(mis.tolist(), [12, 13]); eq(typ.tolist(), [1, 2, 0])
    fig = interp.plot_tail_confusions(k=5, n_images=3, counts=counts)
    axs = np.array(fig.axes).reshape(2, 7)
    eq([_drawn_items(a) for a in axs[0, :2]], [12, 13]); eq([_drawn_items(a) for a in axs[0, 4:]], [1, 2, 0])
    eq([_drawn_items(a) for a in axs[1, :1]], [20]); eq(len(axs[1, 1].images), 0)
    assert axs[0, 0].get_title(loc='left').startswith('c3 (n=10) taken for c0 (n=300): 50.0%')
    plt.close(fig)
    refused(lambda: interp.plot_tail_confusions(n_images=0, counts=counts), contains='k and n_images')

@pytest.mark.parametrize('k', [5, 12])
def test_plot_tail_confusions_is_readable(k):
    "With 5 and 12 confusions the figure grows a row per confusion, keeps its images square and its titles at 9 pt"
    C, per = 16, 3
    g = torch.Generator().manual_seed(k)
    probs = torch.rand(C * per, C, generator=g)
    probs[C // 4 * per:, :4] += .5  # tail images mostly taken for a head class
    counts = [400] * 4 + [10] * 12  # 4 head classes, 12 tail classes: up to 48 tail-to-head confusions
    interp = _figure3_interp(C, per, probs)
    n_rows = len(interp.tail_confusions(counts, top=k))
    assert n_rows == k
    fig = interp.plot_tail_confusions(k=k, n_images=4, counts=counts)
    w, h = fig.get_size_inches()
    assert len(fig.axes) == k * 9 and h / k >= 1.3 and w / 9 >= 1.3
    titles = [a.get_title(loc='left') for a in fig.axes if a.get_title(loc='left')]
    assert len(titles) == k and all(a._left_title.get_fontsize() == 9 for a in fig.axes if a.get_title(loc='left'))
    plt.close(fig)
