"CJK-LT and CJK-LT-ft: counts and shot shares, disjoint fonts and characters, the cache, the backbone's checksum, tiny bench runs"
import warnings
import itertools, json
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from swrm_fastai import data as D
from swrm_fastai.metrics import shot_groups
from swrm_fastai.bench import main

def _has_cjk_fonts():
    try: D.glyph_font_files(D.CJK_FONTS, what='CJK-LT'); return True
    except ValueError: return False

needs_fonts = pytest.mark.skipif(not _has_cjk_fonts(), reason='needs the CJK-LT fonts (`make data` as root)')

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "Every build of the test in its own folder"
    monkeypatch.setenv('SWRM_DATA', str(tmp_path))
    return tmp_path

# ---------------------------------------------------------------- counts and shot shares
@pytest.mark.parametrize('n_max,C', [(1280, 1000), (256, 1000), (128, 200), (64, 100)])
def test_imagenet_shape_keeps_shot_shares(n_max, C):
    n = D.shaped_counts('imagenet-lt', n_max, C)
    th = D.shot_thresholds(D.IMAGENET_LT_SHAPE, n_max)
    assert n.max() == n_max and n.min() >= 1 and (np.diff(n) <= 0).all()
    got = {k: len(v) / C for k, v in shot_groups(torch.as_tensor(n), **th).items()}
    for k, share in zip(('many', 'medium', 'few'), (0.385, 0.479, 0.136)): assert abs(got[k] - share) <= 1.5 / C, (k, got)
    # the thresholds scale with the head: 100 and 20 images at ImageNet-LT's 1,280
    assert th == {'many': max(th['few'], round(100 * n_max / 1280)), 'few': max(2, round(20 * n_max / 1280))}

def test_default_sizes():
    full, cjk = D.shaped_counts('imagenet-lt'), D.shaped_counts('imagenet-lt', 256)
    assert abs(full.sum() - 115846) < 60 and (full.max(), full.min()) == (1280, 5)
    assert (cjk.max(), cjk.min()) == (256, 1) and 22_000 < cjk.sum() < 25_000      # ~ 115,846 / 5
    places, ft = D.shaped_counts('places-lt'), D.shaped_counts('places-lt', 1000)
    assert abs(places.sum() - 62500) < 60 and (places.max(), places.min()) == (4980, 5)
    assert (ft.max(), ft.min()) == (1000, 1) and len(ft) == 365                     # max/min 1,000 as Places-LT's 996

def test_shape_refusals():
    with pytest.raises(ValueError, match='shape must be one of'): D.shaped_counts('cifar')
    with pytest.raises(ValueError, match='n_max must be'): D.shaped_counts('imagenet-lt', 3)
    with pytest.raises(ValueError, match='n_classes must be'): D.shaped_counts('imagenet-lt', 256, 5)
    with pytest.raises(ValueError, match='n_classes must be an integer in 2..1000'): D.cjk_lt(n_classes=1001)

# ---------------------------------------------------------------- characters, look-alikes and fonts
def test_characters_disjoint_and_lookalikes_inside():
    a, b = set(D.CJK_CLASSES), set(D.CJK_FT_CLASSES)
    assert len(a) == len(D.CJK_CLASSES) == 1000 and len(b) == len(D.CJK_FT_CLASSES) == 365 and not a & b
    assert len(D.CJK_LOOKALIKES) >= 30 and len(D.CJK_FT_LOOKALIKES) >= 30
    assert all(set(g) <= a for g in D.CJK_LOOKALIKES) and all(set(g) <= b for g in D.CJK_FT_LOOKALIKES)
    for g in ['己已巳', '未末', '土士', '日曰', '人入八', '大太犬', '田由甲申', '午牛', '戊戌戍']: assert g in D.CJK_LOOKALIKES
    sub = D._cjk_subset(D.CJK_CLASSES, D.CJK_LOOKALIKES, 100)   # small builds keep every look-alike group
    assert len(sub) == 100 and all(c in sub for g in D.CJK_LOOKALIKES for c in g)

def test_fonts_disjoint():
    tr, te = D.CJK_FONTS['train'], D.CJK_FONTS['test']
    assert not set(tr) & set(te)
    assert not {f for _, fs in tr.values() for f in fs} & {f for _, fs in te.values() for f in fs}

def test_missing_fonts_error(tmp_path):
    with pytest.raises(ValueError) as e: D.cjk_lt(n_classes=20, font_dir=tmp_path)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith('CJK-LT: 24 font files not found under') and 'sudo apt-get install fonts-noto-cjk' in msg
    assert 'fonts-morisawa-bizud-mincho' in msg

@needs_fonts
def test_every_font_covers_every_class():
    assert D.cjk_coverage(D.CJK_CLASSES + D.CJK_FT_CLASSES) == {}

@needs_fonts
def test_auto_lookalikes_find_hand_written_pairs():
    chars = ''.join(dict.fromkeys(c for g in D.CJK_LOOKALIKES for c in g))
    auto = D.cjk_auto_lookalikes(chars, 20)
    hand = {frozenset(p) for g in D.CJK_LOOKALIKES for p in itertools.combinations(g, 2)}
    assert len(auto) == 20 and sum(frozenset(p) in hand for p in auto) >= 10   # far above chance (~35 of 3,081 pairs)

# ---------------------------------------------------------------- determinism and the cache
@needs_fonts
def test_build_deterministic_and_cached(cache, monkeypatch):
    chars = D._cjk_subset(D.CJK_CLASSES, D.CJK_LOOKALIKES, 20)
    counts = D.shaped_counts('imagenet-lt', 16, 20)
    a = D.load_cjk(chars, counts, 2, seed=5)
    b = D.load_cjk(chars, counts, 2, seed=5, cache=False)
    for u, v in zip(a, b): assert u.tobytes() == v.tobytes()
    assert a[0].shape == (counts.sum(), 32, 32) and np.bincount(a[3]).tolist() == [2] * 20
    assert sorted(np.bincount(a[1]).tolist(), reverse=True) == counts.tolist()
    assert len(list((cache/'cjk-lt').glob('cjk-lt-*.npz'))) == 1
    monkeypatch.setattr(D, 'render_glyphs', lambda *a, **k: (_ for _ in ()).throw(AssertionError('drew again')))
    c = D.load_cjk(chars, counts, 2, seed=5)                      # read from the cache
    for u, v in zip(a, c): assert np.array_equal(u, v)
    monkeypatch.undo()
    d = D.load_cjk(chars, counts, 2, seed=6, cache=False)
    assert not np.array_equal(a[2], d[2])

# ---------------------------------------------------------------- the backbone
@needs_fonts
def test_backbone_checksum_and_fine_tune(cache):
    from fastai.learner import Learner
    kw = dict(n_classes=20, n_per_class=3, epochs=1, n_test=1)
    f = D.cjk_backbone(**kw)
    info = json.loads(f.with_suffix('.json').read_text())
    import hashlib
    assert info['sha256'] == hashlib.sha256(f.read_bytes()).hexdigest() and 0 <= info['test_accuracy'] <= 1
    assert set(info['classes']) <= set(D.CJK_CLASSES) and not set(info['classes']) & set(D.CJK_FT_CLASSES)
    assert D.cjk_backbone(**kw) == f                                # cached: the same file, not retrained
    torch.manual_seed(0); m = D.cjk_pretrained(7, backbone=f)
    sd = torch.load(f, weights_only=True)
    assert torch.equal(m.stem[0].weight, sd['stem.0.weight']) and m.fc.out_features == 7
    body, head = D.cjk_splitter(m)
    assert len(head) == 2 and len(body) + 2 == len(list(m.parameters()))
    x = D.load_cjk(D.CJK_FT_CLASSES[:7], [4] * 7, 1, seed=0)
    sdl = D.images_dls(*x, list(D.CJK_FT_CLASSES[:7]), bs=8, stats=info['stats'], device='cpu')
    learn = Learner(sdl, m, splitter=D.cjk_splitter)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)   # fastai's frozen warm-up, then all
    assert not torch.equal(m.stem[0].weight, sd['stem.0.weight'])
    raw = bytearray(f.read_bytes()); raw[-1] ^= 1; f.write_bytes(bytes(raw))            # a changed file is refused
    with pytest.raises(ValueError, match='differs from the recorded'): D.cjk_pretrained(7, backbone=f)
    with pytest.raises(ValueError, match='one-channel'): D.cjk_pretrained(7, in_ch=3, backbone=f)

# ---------------------------------------------------------------- tiny bench runs
@needs_fonts
@pytest.mark.parametrize('dataset', ['cjk-lt', 'cjk-lt-ft'])
def test_bench_quick(dataset, cache, tmp_path):
    out = tmp_path/'res'
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert main(['--dataset', dataset, '--quick', '--methods', 'ce,swrm', '--epochs', '3', '--switch', '0.5', '--threads', '1', '--no-bar', '--out', str(out)]) == 0
    assert not [str(x.message) for x in w if 'missing from font' in str(x.message)]   # the ideographs are drawn, not boxes
    for m in ('ce', 'swrm'):   # the paper's Figure 3 of each run, beside its confusion matrix
        assert (out/f'tail_images_{m}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    runs, conf = pd.read_csv(out/'runs.csv'), json.loads((out/'config.json').read_text())
    assert list(runs.method) == ['ce', 'swrm'] and runs.overall.notna().all()
    counts = np.array(conf['counts'])
    assert counts.max() == 64 and len(counts) == (100 if dataset == 'cjk-lt' else 60)
    if dataset == 'cjk-lt':   # scored with the data set's thresholds: every group is present
        assert runs[['many', 'medium', 'few']].notna().all().all()
    assert runs.lookalike_pairs.iloc[1] > 0 and runs.auto_lookalike_pairs.iloc[1] > 0   # both look-alike lists diagnosed
    assert 0 <= runs.auto_lookalike_chance.iloc[1] <= 1
    look = (out/'lookalike.md').read_text()   # both diagnostics, each as a table with its chance level
    assert look.count('| SWRM |') == 2 and 'automatic look-alikes' in look

@needs_fonts
def test_no_thinning_keeps_hairlines():
    "CJK-LT never draws the thinner weight (it erases Mincho hairlines); the other random choices stay the same"
    f = [p for p in D.glyph_font_files(D.CJK_FONTS, what='CJK-LT')['train'] if p.name == 'ipam.ttf']
    a = D.render_glyphs(np.zeros(40, int), ['士'], f, seed=0, size=32, em=22, baseline=24)
    b = D.render_glyphs(np.zeros(40, int), ['士'], f, seed=0, **D._CJK_DRAW)
    same = [np.array_equal(u, v) for u, v in zip(a, b)]
    assert 0 < sum(same) < 40                                     # only the images drawn thinner change
    assert all(b[i].astype(int).sum() > a[i].astype(int).sum() for i, s in enumerate(same) if not s)
