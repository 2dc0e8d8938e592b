"Integration tests of the `swrm-bench` harness: tiny real runs end to end, the results folder's consistency, CLI errors"
import json, math, re, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from swrm_fastai.bench import main

N_CLASSES, N_TRAIN, N_TEST, N_MAX, IMB = 10, 320, 40, 300, 100
COMMON = ['--epochs', '2', '--n-max', str(N_MAX), '--imb', str(IMB), '--seeds', '0', '1', '--threads', '1', '--no-bar']

def write_idx(fname, arr):
    "An uncompressed uint8 idx file (the MNIST format): magic 0 0 8 ndim, big-endian dims, data"
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape)
    Path(fname).write_bytes(head + arr.tobytes())

@pytest.fixture(scope='module')
def fmnist_dir(tmp_path_factory):
    "A small learnable Fashion-MNIST look-alike: class c is a bright 6x6 patch at a class-specific place, plus noise"
    d = tmp_path_factory.mktemp('fmnist')
    rng = np.random.default_rng(0)
    def make(n_per_class):
        y = np.repeat(np.arange(N_CLASSES), n_per_class); rng.shuffle(y)
        x = rng.integers(0, 60, (len(y), 28, 28))
        for i, c in enumerate(y):
            r, col = 2 + 8 * (c // 3), 2 + 8 * (c % 3)
            x[i, r:r + 6, col:col + 6] += 180
        return x.clip(0, 255).astype(np.uint8), y.astype(np.uint8)
    (xtr, ytr), (xte, yte) = make(N_TRAIN), make(N_TEST)
    for name, a in [('train-images-idx3-ubyte', xtr), ('train-labels-idx1-ubyte', ytr),
                    ('t10k-images-idx3-ubyte', xte), ('t10k-labels-idx1-ubyte', yte)]: write_idx(d/name, a)
    return d

def expected_counts(n_max, C, imb):
    "The exponential profile, written out independently: floor(n_max * imb^(-c/(C-1)))"
    return [math.floor(n_max * imb ** (-c / (C - 1))) for c in range(C)]

def group_of(n): return 'many' if n > 100 else ('few' if n < 20 else 'medium')

def parse_table(md):
    "{label: {column: (mean, std) or None}} from a table.md"
    lines = [l for l in md.splitlines() if l.startswith('|')]
    cols = [c.strip() for c in lines[0].strip('|').split('|')]
    out = {}
    for l in lines[2:]:
        cells = dict(zip(cols, (c.strip() for c in l.strip('|').split('|'))))
        row = {}
        for k in ('overall', 'many', 'medium', 'few'):
            m = re.fullmatch(r'(-?[\d.]+)(?: ± ([\d.]+))?', cells[k])
            row[k] = None if cells[k] == '–' else (float(m[1]), None if m[2] is None else float(m[2]))
        out[cells['method']] = row
    return out

@pytest.fixture(scope='module')
def tiny_run(fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')/'res'
    rc = main(['--methods', 'ce,swrm', '--data-root', str(fmnist_dir), '--out', str(out)] + COMMON)
    assert rc == 0
    return out

def test_outputs_exist(tiny_run):
    for f in ['table.md', 'results.csv', 'runs.csv', 'per_class.csv', 'per_class_mean.csv', 'tail_confusions.csv',
              'tail_confusions.md', 'config.json', 'log.txt', 'confusion_ce.png', 'confusion_swrm.png',
              'class_weights.png', 'similarity_window.png']:
        p = tiny_run/f
        assert p.is_file() and p.stat().st_size > 0, f
    assert (tiny_run/'confusion_ce.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

def test_table_equals_csv(tiny_run):
    "Every number of table.md is the CSV's mean and std, rounded; the CSV's mean/std are those of runs.csv"
    res, runs = pd.read_csv(tiny_run/'results.csv'), pd.read_csv(tiny_run/'runs.csv')
    table = parse_table((tiny_run/'table.md').read_text())
    assert list(table) == ['CE', 'SWRM'] and list(res.method) == ['ce', 'swrm']
    assert len(runs) == 4 and sorted(runs.seed.unique()) == [0, 1]
    for label, m in [('CE', 'ce'), ('SWRM', 'swrm')]:
        r, per_seed = res[res.method == m].iloc[0], runs[runs.method == m]
        assert r.n_seeds == 2
        for k in ('overall', 'many', 'medium', 'few'):
            vals = per_seed[k].to_numpy(float)
            assert r[f'{k}_mean'] == pytest.approx(vals.mean(), abs=1e-9)
            assert r[f'{k}_std'] == pytest.approx(np.std(vals, ddof=1), abs=1e-9)
            mean, std = table[label][k]
            assert mean == round(r[f'{k}_mean'], 2) and std == round(r[f'{k}_std'], 2)

def test_groups_from_per_class(tiny_run):
    "Group scores equal the mean of per-class accuracies inside the shot groups (many > 100, few < 20); overall is correct/total"
    pc, runs = pd.read_csv(tiny_run/'per_class.csv'), pd.read_csv(tiny_run/'runs.csv')
    counts = expected_counts(N_MAX, N_CLASSES, IMB)
    for (m, s), d in pc.groupby(['method', 'seed']):
        d = d.sort_values('class')
        assert d.train_count.tolist() == counts and (d.n_valid == N_TEST).all()
        assert np.allclose(d.accuracy, 100 * d.correct / d.n_valid)
        run = runs[(runs.method == m) & (runs.seed == s)].iloc[0]
        assert run.overall == pytest.approx(100 * d.correct.sum() / d.n_valid.sum())
        g = np.array([group_of(n) for n in counts])
        for k in ('many', 'medium', 'few'):
            assert run[k] == pytest.approx(d.accuracy.to_numpy()[g == k].mean())
    wide = pd.read_csv(tiny_run/'per_class_mean.csv')
    assert np.allclose(wide.swrm, pc[pc.method == 'swrm'].groupby('class').accuracy.mean().sort_index())

def test_tail_confusions_and_config(tiny_run):
    "Table 1: tail -> head pairs only, percentages bounded by each true class's error rate; config has the run"
    t, pc = pd.read_csv(tiny_run/'tail_confusions.csv'), pd.read_csv(tiny_run/'per_class.csv')
    assert {'pct_CE', 'pct_SWRM', 'change'} <= set(t.columns)
    assert (t.true_count <= 100).all() and (t.pred_count > 100).all()
    assert np.allclose(t.change, t.pct_SWRM - t.pct_CE)
    every = pd.read_csv(tiny_run/'tail_confusions_all.csv')  # the same pairs, one column per method
    assert list(every.true) == list(t.true) and np.allclose(every.pct_CE, t.pct_CE) and np.allclose(every.pct_SWRM, t.pct_SWRM)
    acc0 = pc[(pc.method == 'ce') & (pc.seed == 0)].set_index('class').accuracy
    for true, d in t.groupby('true_idx'): assert d.pct_CE.sum() <= 100 - acc0[true] + 1e-6
    conf = json.loads((tiny_run/'config.json').read_text())
    assert conf['counts'] == expected_counts(N_MAX, N_CLASSES, IMB) and conf['n_train'] == sum(conf['counts'])
    assert conf['methods'] == ['ce', 'swrm'] and conf['seeds'] == [0, 1] and conf['epochs'] == 2
    assert conf['versions']['torch'] and conf['versions']['fastai']
    sc = conf['switch_cost']
    assert sc['n_runs'] == 2 and sc['switch_time_s'] > 0 and sc['epochs'] == pytest.approx(sc['switch_time_s'] / sc['epoch_time_s'])
    log = (tiny_run/'log.txt').read_text()
    assert log.count('SimilarityWindowCallback: epoch 1') == 2  # switch at round(0.7 * 2) = 1, once per seed

def test_sweep(fmnist_dir, tmp_path):
    out = tmp_path/'sweep'
    argv = ['--sweep', 'beta=0,2', '--data-root', str(fmnist_dir), '--out', str(out)] + COMMON
    argv[argv.index('--seeds') + 1:argv.index('--seeds') + 3] = ['0']  # one seed
    assert main(argv) == 0
    res = pd.read_csv(out/'results.csv')
    assert res[['param', 'value', 'method']].values.tolist() == [['beta', 0.0, 'swrm'], ['beta', 2.0, 'swrm']]
    assert (out/'sweep_beta.png').stat().st_size > 0
    log = (out/'log.txt').read_text()
    assert 'beta=0, tau=1; weights' in log and 'beta=2, tau=1; weights' in log and 'margins 0.000..0.000' in log

@pytest.mark.parametrize('argv, msg', [
    (['--methods', 'ce,nosuch'], "unknown method 'nosuch'"),
    (['--dataset', 'mnist-lt'], "unknown dataset 'mnist-lt'"),
    (['--sweep', 'window'], 'bad sweep'),
    (['--sweep', 'window=2,x'], 'bad sweep value'),
    (['--sweep', 'gamma=1,2'], "cannot sweep 'gamma'"),
    (['--epochs', 'many'], "invalid int value"),
    (['--switch', '1.5'], 'switch must be'),
    (['--data-root', '/nonexistent/fmnist'], 'cannot load fashion-mnist-lt: Fashion-MNIST not found'),
    (['--dataset', 'imagenet-lt'], 'needs --data-root'),
    (['--dataset', 'places-lt', '--data-root', '/nonexistent/places'], 'cannot load places-lt'),
    (['--dataset', 'glyphs-lt', '--data-root', '/nonexistent/fonts'], 'cannot load glyphs-lt: glyphs-LT: 37 font files not found under /nonexistent/fonts'),
    (['--dataset', 'glyphs-lt', '--n-max', '50'], 'cannot load glyphs-lt: n_max=50 is too small for imb_factor=100.0'),
])
def test_bad_arguments(argv, msg, capsys):
    assert main(argv + ['--no-bar']) == 2
    err = capsys.readouterr().err
    assert err.startswith('swrm-bench: error: ') and msg in err and err.count('\n') == 1 and 'Traceback' not in err

def test_bad_window_after_loading(fmnist_dir, capsys):
    "W must fit the data's C = 10: known only once the data is loaded, still one line and exit 2"
    assert main(['--window', '11', '--n-max', str(N_MAX), '--data-root', str(fmnist_dir), '--no-bar']) == 2
    err = capsys.readouterr().err
    assert 'window size W must be an integer in 2..C = 2..10' in err and err.count('\n') == 1

def test_cli_subprocess():
    "`python -m swrm_fastai.bench` exits 2 with one line on stderr"
    p = subprocess.run([sys.executable, '-m', 'swrm_fastai.bench', '--methods', 'nosuch'], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()] and 'unknown method' in p.stderr

def test_dyswrm_models_no_similarity_but_dyswrm_tsne_does(fmnist_dir, tmp_path, monkeypatch):
    "The paper's DySWRM replaces the similarity modelling: no prototype pass, no t-SNE; `dyswrm-tsne` runs both once"
    import openTSNE
    import swrm_fastai.callback as cbm
    from swrm_fastai.losses import DySWRMLoss
    calls = dict(tsne=0, features=0)
    tsne_fit, feature_sums = openTSNE.TSNE.fit, cbm.feature_sums
    def count_tsne(self, *a, **k): calls['tsne'] += 1; return tsne_fit(self, *a, **k)
    def count_features(*a, **k): calls['features'] += 1; return feature_sums(*a, **k)
    monkeypatch.setattr(openTSNE.TSNE, 'fit', count_tsne)
    monkeypatch.setattr(cbm, 'feature_sums', count_features)
    from swrm_fastai.bench import bench_config, run_bench
    cfg = bench_config(methods='dyswrm', seeds=[0], epochs=2, n_max=N_MAX, imb=IMB, data_root=str(fmnist_dir),
                       bar=False, threads=1, out=str(tmp_path/'a'))
    res = run_bench(cfg)
    assert calls == dict(tsne=0, features=0)
    assert res['runs'].switch_time_s.notna().all() and res['runs'].prototypes_time_s.isna().all()
    assert any('LossSwitchCallback: epoch 1: loss switched to DySWRMLoss' in m for m in res['log'])
    cfg = bench_config(methods='dyswrm-tsne', seeds=[0], epochs=2, n_max=N_MAX, imb=IMB, data_root=str(fmnist_dir),
                       bar=False, threads=1, out=str(tmp_path/'b'))
    res = run_bench(cfg)
    assert calls == dict(tsne=1, features=1)
    assert res['runs'].prototypes_time_s.notna().all()
    # the random-window ablations model no similarity either; la-pw models it once, from an LA model
    cfg = bench_config(methods='swrm-random,la-pw-random,la-pw', seeds=[0], epochs=2, n_max=N_MAX, imb=IMB,
                       data_root=str(fmnist_dir), bar=False, threads=1, kappa=2., out=str(tmp_path/'c'))
    res = run_bench(cfg)
    assert calls == dict(tsne=2, features=2)
    lf = res['kept']['la-pw']['window']
    assert lf is not None and res['runs'].switch_time_s.notna().all() and res['runs'].lookalike_share.notna().all()
    # la-tw models it once; its random-window ablation and the learned-vector pairwise methods never do
    cfg = bench_config(methods='la-tw-random,la-pw-dy,la-pw-up,la-tw', seeds=[0], epochs=2, n_max=N_MAX, imb=IMB,
                       data_root=str(fmnist_dir), bar=False, threads=1, power=.3, out=str(tmp_path/'d'))
    res = run_bench(cfg)
    assert calls == dict(tsne=3, features=3)
    runs = res['runs'].set_index('method')
    assert runs.switch_time_s.notna().all() and runs.lookalike_share.notna().all()  # every one of them has a window
    assert any('loss switched to DyPairwiseWindowLoss' in m for m in res['log'])

def test_public_switch_callback_models_no_similarity(monkeypatch):
    "`LossSwitchCallback(k, loss)` switches to the given loss and computes nothing else"
    import torch, openTSNE
    import swrm_fastai.callback as cbm
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.losses import CrossEntropyLossFlat
    from fastai.callback.progress import no_bar  # noqa: F401
    from swrm_fastai.losses import DySWRMLoss
    def boom(*a, **k): raise AssertionError('similarity modelled')
    monkeypatch.setattr(openTSNE.TSNE, 'fit', boom); monkeypatch.setattr(cbm, 'feature_sums', boom)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 5, (64,), generator=g)
    ds = list(zip(x, y))
    dls = DataLoaders.from_dsets(ds, ds, bs=16)
    dy = DySWRMLoss([20, 15, 12, 10, 7], window=3)
    cb = cbm.LossSwitchCallback(1, dy, verbose=False)
    learn = Learner(dls, torch.nn.Linear(4, 5), loss_func=CrossEntropyLossFlat(), cbs=cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    assert learn.loss_func is dy and int(dy.n_steps) == len(dls.train)
# ---------------------------------------------------------------- Glyphs-LT: a tiny run and the look-alike diagnostic
from swrm_fastai import data as D

def _has_glyph_fonts():
    try: D.glyph_font_files(); return True
    except ValueError: return False

@pytest.fixture(scope='module')
def glyph_run(tmp_path_factory):
    "CE and SWRM on a tiny Glyphs-LT (n_max 20, imbalance 10: 737 training images, 100 classes), 2 epochs, the cache in a temp dir"
    if not _has_glyph_fonts(): pytest.skip('needs the Glyphs-LT fonts (`make data` as root)')
    out, mp = tmp_path_factory.mktemp('glyphs')/'res', pytest.MonkeyPatch()
    mp.setenv('SWRM_DATA', str(tmp_path_factory.mktemp('glyph-cache')))
    try: rc = main(['--dataset', 'glyphs-lt', '--methods', 'ce,swrm', '--n-max', '20', '--imb', '10', '--epochs', '2', '--seeds', '0',
                    '--threads', '1', '--no-bar', '--out', str(out)])
    finally: mp.undo()
    assert rc == 0
    return out

def test_glyph_run_lookalike_columns(glyph_run):
    "runs.csv has the diagnostic: NaN for CE (no window), SWRM's line against the 25 known pairs and the exact chance"
    runs = pd.read_csv(glyph_run/'runs.csv').set_index('method')
    cols = ['lookalike_pairs_shared', 'lookalike_pairs', 'lookalike_share', 'lookalike_chance']
    assert set(cols) <= set(runs.columns) and runs.loc['ce', cols].isna().all()
    s = runs.loc['swrm']
    assert s.lookalike_pairs == 25 and 0 <= s.lookalike_pairs_shared <= 25 and s.lookalike_share == pytest.approx(s.lookalike_pairs_shared / 25)
    assert s.lookalike_chance == pytest.approx(14 * 185 / (100 * 99))   # (W-1)(2C-W) / (C(C-1)), W = 15, C = 100
    log = (glyph_run/'log.txt').read_text()
    assert f"look-alike pairs sharing a window {int(s.lookalike_pairs_shared)}/25" in log and 'chance 26%' in log
    md = (glyph_run/'lookalike.md').read_text()
    assert 'o O 0 · l I 1 |' in md and re.search(rf"\| SWRM \| {s.lookalike_pairs_shared:.2f} of 25 \| {100 * s.lookalike_share:.2f} \| 26.16 \| 1 \|", md)
    conf = json.loads((glyph_run/'config.json').read_text())
    assert [tuple(g) for g in conf['lookalikes']] == D.GLYPH_LOOKALIKES and conf['n_train'] == sum(expected_counts(20, 100, 10)) == 737
    assert conf['window'] == 15 and conf['beta'] == 1 and conf['switch'] == 0.7

def test_glyph_run_tables(glyph_run):
    "100 classes, 100 test images each; the markdown tables stay tables with '|' and '`' as class names"
    pc = pd.read_csv(glyph_run/'per_class.csv', keep_default_na=False)
    assert len(pc) == 200 and (pc.n_valid == 100).all() and set(pc.name) == set(D.GLYPH_CLASSES)
    assert sorted(pc[pc.method == 'ce'].train_count, reverse=True) == expected_counts(20, 100, 10)
    for f in ('table.md', 'tail_confusions.md', 'lookalike.md'):
        rows = [l for l in (glyph_run/f).read_text().splitlines() if l.startswith('|')]
        n = len(re.split(r'(?<!\\)\|', rows[0]))
        assert all(len(re.split(r'(?<!\\)\|', l)) == n for l in rows), f

# ---------------------------------------------------------------- the results folder: checked first, growing, resumable
def _no_training(monkeypatch):
    "Make any training fail loudly: the checks below must come before the first batch"
    import swrm_fastai.bench as B
    def boom(*a, **k): raise AssertionError("trained before the results folder was checked")
    monkeypatch.setattr(B, 'fit_method', boom)

def test_out_is_checked_before_training(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    afile = tmp_path/'afile'; afile.write_text('x')
    for out, msg in ((afile, 'exists and is not a folder'), ('/proc/nope', 'cannot write a results folder there')):
        assert main(['--quick', '--out', str(out), '--no-bar']) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count('\n') == 1 and 'Traceback' not in err

def test_growing_results_survive_a_failure_and_resume(fmnist_dir, tmp_path, monkeypatch, capsys):
    "A run that fails keeps the rows finished before it; --resume skips them and refuses other settings"
    import swrm_fastai.bench as B
    out = tmp_path/'res'
    argv = ['--methods', 'ce,swrm', '--data-root', str(fmnist_dir), '--out', str(out)] + COMMON
    real, calls = B.fit_method, []
    def fail_on_swrm(dls, method, seed, *a, **k):
        if method == 'swrm': raise RuntimeError('simulated crash')
        calls.append((method, seed)); return real(dls, method, seed, *a, **k)
    monkeypatch.setattr(B, 'fit_method', fail_on_swrm)
    with pytest.raises(RuntimeError, match='simulated crash'): main(argv)
    rows = pd.read_csv(out/'runs.csv')
    assert rows[['method', 'seed']].values.tolist() == [['ce', 0], ['ce', 1]] and calls == [('ce', 0), ('ce', 1)]
    assert set(pd.read_csv(out/'per_class.csv').method) == {'ce'} and (out/'runs'/'ce-seed0.pt').exists()
    # the same command again: refused, the finished runs are not overwritten
    assert main(argv) == 2 and 'add --resume' in capsys.readouterr().err
    # other settings: refused, naming what differs
    assert main([*argv, '--resume', '--lr', '0.05']) == 2 and 'lr=0.1' in capsys.readouterr().err
    calls.clear(); monkeypatch.setattr(B, 'fit_method', lambda *a, **k: (calls.append(a[1:3]), real(*a, **k))[1])
    assert main([*argv, '--resume']) == 0
    assert calls == [('swrm', 0), ('swrm', 1)]  # the two CE runs were not trained again
    rows = pd.read_csv(out/'runs.csv')
    assert rows[['method', 'seed']].values.tolist() == [['ce', 0], ['ce', 1], ['swrm', 0], ['swrm', 1]]
    assert rows.threads.tolist() == [1] * 4
    t = pd.read_csv(out/'tail_confusions.csv')  # CE's confusion matrix came back from runs/ce-seed0.pt
    assert {'pct_CE', 'pct_SWRM'} <= set(t.columns)
    assert set(pd.read_csv(out/'results.csv').method) == {'ce', 'swrm'}
    assert json.loads((out/'config.json').read_text())['status'] == 'finished'
    assert 'resuming' in capsys.readouterr().out

def test_each_run_announced(fmnist_dir, tmp_path, capsys):
    "A line when each run starts (method, seed, epochs, threads), so a slow run is visibly alive"
    argv = ['--methods', 'ce', '--data-root', str(fmnist_dir), '--out', str(tmp_path/'r')] + COMMON
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'run 1/2: CE, seed 0, 2 epochs, 1 thread\n' in out and 'run 2/2: CE, seed 1, 2 epochs, 1 thread\n' in out

def test_help_texts(capsys):
    "--help names the default methods (the paper's 10) and the new options; table.md gives n_max as a number"
    from swrm_fastai.bench import bench_parser, PAPER_METHODS
    h = bench_parser().format_help()
    assert "default:thepaper's10," + ','.join(PAPER_METHODS) in ''.join(h.split()) and '--resume' in h  # argparse wraps at hyphens

def test_table_names_n_max(tiny_run):
    assert f'n_max {N_MAX},' in (tiny_run/'table.md').read_text()
