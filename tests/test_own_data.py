"`swrm-bench --data` and `compare_losses` on a user's images: a long-tailed Fashion-MNIST image folder and CSV written as PNG files"
import math, re, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from swrm_fastai.bench import main, bench_parser
from swrm_fastai.data import load_fashion_mnist, FASHION_MNIST_NAMES
import swrm_fastai.own_data as O

NAMES = [n.split('/')[0] for n in FASHION_MNIST_NAMES]  # 'T-shirt/top' cannot name a folder
TRAIN_MAX, TRAIN_IMB, VALID_MAX, VALID_IMB = 20, 10, 6, 3
FAST = ['--threads', '1', '--no-bar']
BASE = ['--arch', 'resnet18', '--no-pretrained', '--size', '32']
RESNET = BASE + ['--epochs', '2', '--freeze-epochs', '1'] + FAST

def lt_counts(n_max, C, imb): return [math.floor(n_max * imb ** (-c / (C - 1))) for c in range(C)]  # written out independently

@pytest.fixture(scope='module')
def arrays():
    "Long-tailed training and validation subsets of Fashion-MNIST (the Debian copy, via the package's loader)"
    x_tr, y_tr, x_te, y_te = load_fashion_mnist()
    return O.lt_arrays(x_tr, y_tr, TRAIN_MAX, TRAIN_IMB), O.lt_arrays(x_te, y_te, VALID_MAX, VALID_IMB, seed=1)

@pytest.fixture(scope='module')
def folder(arrays, tmp_path_factory):
    "train/<class>/*.png and valid/<class>/*.png, plus a note that is not an image"
    d = O.export_images(tmp_path_factory.mktemp('own')/'fmnist-lt', *arrays, NAMES)
    (d/'train'/'Bag'/'README.txt').write_text('not an image')
    return d

@pytest.fixture(scope='module')
def csv(arrays, tmp_path_factory):
    return O.export_images(tmp_path_factory.mktemp('own')/'fmnist-lt-csv', *arrays, NAMES, layout='csv')

@pytest.fixture(scope='module')
def folder_run(folder, tmp_path_factory):
    "CE and SWRM, 2 seeds, fine_tune(2, freeze_epochs=1): the results folder and what the command printed"
    import contextlib, io
    out = tmp_path_factory.mktemp('res')/'folder'
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(['--data', str(folder), '--methods', 'ce,swrm', '--seeds', '0', '1', '--out', str(out)] + RESNET) == 0
    (out/'printed.txt').write_text(printed.getvalue())
    return out

def test_export_counts(folder, csv):
    "The files on disk follow the long tail asked for"
    want = lt_counts(TRAIN_MAX, 10, TRAIN_IMB)
    assert [len(list((folder/'train'/n).glob('*.png'))) for n in NAMES] == want
    df = pd.read_csv(csv)
    assert df[~df.is_valid].label.value_counts()[NAMES].tolist() == want
    assert df[df.is_valid].label.value_counts()[NAMES].tolist() == lt_counts(VALID_MAX, 10, VALID_IMB)
    assert Image.open(csv.parent/df.fname[0]).size == (28, 28)

def test_folder_run_results(folder_run, folder):
    "runs.csv has a balanced-accuracy column equal to the mean per-class accuracy; groups come from the training counts"
    runs, pc = pd.read_csv(folder_run/'runs.csv'), pd.read_csv(folder_run/'per_class.csv')
    assert runs[['method', 'seed']].values.tolist() == [['ce', 0], ['ce', 1], ['swrm', 0], ['swrm', 1]]
    for r in runs.itertuples():
        p = pc[(pc.method == r.method) & (pc.seed == r.seed)]
        valid = dict(zip(NAMES, lt_counts(VALID_MAX, 10, VALID_IMB)))
        assert p.name.tolist() == sorted(NAMES) and p.n_valid.tolist() == [valid[n] for n in p.name]  # fastai's sorted vocab
        assert math.isclose(r.balanced, 100 * (p.correct / p.n_valid).mean(), abs_tol=1e-6)
        assert math.isclose(r.overall, 100 * p.correct.sum() / p.n_valid.sum(), abs_tol=1e-6)
        train = {n: len(list((folder/'train'/n).glob('*.png'))) for n in NAMES}
        assert p.train_count.tolist() == [train[n] for n in p.name]
        assert p.group.tolist() == ['many' if n > 100 else 'few' if n < 20 else 'medium' for n in p.train_count]
    t = (folder_run/'table.md').read_text()
    assert '| method | overall | balanced | many | medium | few | seeds |' in t and 'fine_tune(2, freeze_epochs=1)' in t

def test_folder_run_paired_and_switch(folder_run):
    "paired.md compares SWRM with CE; SWRM's callback did not switch in fine_tune's frozen warm-up, then switched at 0.7 of 2 epochs"
    md = (folder_run/'paired.md').read_text()
    assert re.search(r'\| SWRM \| CE \| CE and best baseline \| [+-]\d+\.\d\d \| \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] \|', md)
    paired, pc = pd.read_csv(folder_run/'paired.csv'), pd.read_csv(folder_run/'per_class.csv')
    a, b = (pc[pc.method == m].sort_values(['seed', 'class']).accuracy.to_numpy() for m in ('swrm', 'ce'))
    assert math.isclose(paired['diff'][0], (a - b).mean(), abs_tol=1e-6) and paired.low[0] <= paired['diff'][0] <= paired.high[0]
    log = (folder_run/'log.txt').read_text()
    assert log.count("frozen warm-up: no switch") == 2 and log.count('SimilarityWindowCallback: epoch 1:') == 2

def test_summary_printed(folder_run):
    "The printed summary: the skipped file, the paired comparison in words, the best method's fastai line"
    out = (folder_run/'printed.txt').read_text()
    assert '1 file that is not an image skipped' in out and re.search(r'\nSWRM vs CE: [+-]\d+\.\d\d points \[', out)
    assert re.search(r"in fastai:\n  learn = vision_learner\(dls, resnet18, (loss_func=CrossEntropyLossFlat\(\)|cbs=SimilarityWindowCallback\(0.7, "
                     r"window=3, beta=1, loss='swrm'\)), pretrained=False\); learn.fine_tune\(2, 0.002, freeze_epochs=1\)", out)

def test_csv_paper_schedule(csv, tmp_path):
    "The package's `small` with the paper schedule on the CSV layout"
    out = tmp_path/'r'
    assert main(['--data', str(csv), '--arch', 'small', '--schedule', 'paper', '--epochs', '2', '--methods', 'ce,la', '--seeds', '0',
                 '--out', str(out)] + FAST) == 0
    runs = pd.read_csv(out/'runs.csv')
    assert 'balanced' in runs and (out/'paired.md').exists() and (out/'per_class.csv').exists()
    assert 'the paper schedule' in (out/'table.md').read_text() and 'small (random weights)' in (out/'table.md').read_text()

def test_valid_pct(folder, tmp_path):
    "Class folders without a split: --valid-pct draws a stratified one, every class keeping >= 1 image each side"
    flat = tmp_path/'flat'; shutil.copytree(folder/'train', flat)
    out = tmp_path/'r'
    assert main(['--data', str(flat), '--valid-pct', '0.3', '--arch', 'small', '--schedule', 'paper', '--epochs', '1', '--bs', '16',
                 '--methods', 'ce', '--seeds', '0', '--out', str(out)] + FAST) == 0
    pc = pd.read_csv(out/'per_class.csv')
    n = np.array(lt_counts(TRAIN_MAX, 10, TRAIN_IMB))[[NAMES.index(c) for c in pc.name]]
    v = np.clip(np.round(0.3 * n), 1, n - 1)
    assert pc.n_valid.tolist() == v.astype(int).tolist() and pc.train_count.tolist() == (n - v).astype(int).tolist()

def test_weights(folder, tmp_path):
    "A state dict or learn.save file the test saves starts the run; one of another architecture is refused"
    from fastai.learner import Learner
    m, split, _ = O.own_model('resnet18', 10, seed=5)
    torch.save(m.state_dict(), tmp_path/'sd.pth')
    Learner(None, m, loss_func=torch.nn.CrossEntropyLoss(), splitter=split, path=tmp_path, model_dir='.').save('ls')  # learn.save: model + optimiser
    for f in (tmp_path/'sd.pth', tmp_path/'ls.pth'):
        m2 = O.own_model('resnet18', 10, seed=0, weights=f)[0]
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    seen = []
    real = O.fit_own
    def spy(dls, method, seed, cfg, **kw):
        r = real(dls, method, seed, cfg, **kw); seen.append(cfg['weights']); return r
    import unittest.mock as um
    with um.patch.object(O, 'fit_own', spy):
        assert main(['--data', str(folder), '--weights', str(tmp_path/'ls.pth'), '--methods', 'ce', '--seeds', '0',
                     '--out', str(tmp_path/'r')] + RESNET) == 0
    assert seen == [str(tmp_path/'ls.pth')] and 'weights ls.pth' in (tmp_path/'r'/'table.md').read_text()

@pytest.fixture
def no_training(monkeypatch):
    "Any training batch fails the test: the refusals come before"
    def boom(*a, **k): raise AssertionError('training started')
    monkeypatch.setattr(O, 'fit_own', boom)

def _refused(argv, msg, capsys):
    assert main(argv + FAST) == 2
    err = capsys.readouterr().err
    assert err.startswith('swrm-bench: error: ') and msg in err and err.count('\n') == 1 and 'Traceback' not in err, err

def _copy(folder, tmp_path):
    d = tmp_path/'data'; shutil.copytree(folder, d); return d

def test_refuse_missing_path(no_training, tmp_path, capsys): _refused(['--data', str(tmp_path/'nosuch')], 'does not exist', capsys)

def test_refuse_no_split(no_training, folder, capsys):
    _refused(['--data', str(folder/'train')], 'has no train/ and valid/ (or test/) folders', capsys)

def test_refuse_empty_class(no_training, folder, tmp_path, capsys):
    d = _copy(folder, tmp_path); (d/'train'/'Empty').mkdir(); (d/'train'/'Empty'/'notes.txt').write_text('x')
    _refused(['--data', str(d)], 'holds no image', capsys)

def test_refuse_unreadable_image(no_training, folder, tmp_path, capsys):
    d = _copy(folder, tmp_path); (d/'train'/'Bag'/'broken.png').write_bytes(b'not a png')
    _refused(['--data', str(d)], 'broken.png cannot be read as an image', capsys)

def test_refuse_csv_missing_column(no_training, csv, capsys):
    bad = csv.parent/'nolabel.csv'; pd.read_csv(csv).drop(columns='label').to_csv(bad, index=False)
    _refused(['--data', str(bad)], "has no 'label' column", capsys)

def test_refuse_csv_missing_file(no_training, csv, capsys):
    bad = csv.parent/'missing.csv'
    pd.concat([pd.read_csv(csv), pd.DataFrame(dict(fname=['images/nosuch.png'], label=['Bag'], is_valid=[True]))]).to_csv(bad, index=False)
    _refused(['--data', str(bad)], '1 file not found, e.g. images/nosuch.png', capsys)

def test_refuse_valid_class_not_in_training(no_training, folder, tmp_path, capsys):
    d = _copy(folder, tmp_path); shutil.move(str(d/'valid'/'Bag'), str(d/'valid'/'Hat'))
    _refused(['--data', str(d)], "validation class 'Hat' has no training image", capsys)

def test_refuse_one_class(no_training, folder, tmp_path, capsys):
    d = tmp_path/'one'
    for s in ('train', 'valid'): shutil.copytree(folder/s/'Bag', d/s/'Bag')
    _refused(['--data', str(d)], "one class only ('Bag')", capsys)

def test_refuse_valid_pct_class_of_one(no_training, folder, tmp_path, capsys):
    d = tmp_path/'flat'; shutil.copytree(folder/'train', d)
    for f in sorted((d/'Ankle boot').glob('*.png'))[1:]: f.unlink()
    _refused(['--data', str(d), '--valid-pct', '0.2'], "class 'Ankle boot' has 1 image", capsys)

def test_refuse_fewer_images_than_a_batch(no_training, folder, capsys):
    _refused(['--data', str(folder), '--bs', '500'], 'fewer training images than a batch (500)', capsys)

@pytest.mark.parametrize('extra, msg', [
    (['--window', '11'], 'window size W must be an integer in 2..C = 2..10'),
    (['--arch', 'resnet19'], "unknown architecture 'resnet19' (did you mean resnet18"),
    (['--arch', 'small', '--pretrained'], "the package's small has no pretrained weights"),
    (['--quick'], "--quick is for the package's data sets, not --data"),
    (['--weights', '/nonexistent/w.pth'], 'weights file /nonexistent/w.pth does not exist'),
    (['--valid-pct', '0.2'], 'already has a validation split (valid/): drop --valid-pct'),
])
def test_refuse_options(no_training, folder, extra, msg, capsys):
    _refused(['--data', str(folder), '--arch', 'resnet18', '--no-pretrained', *extra], msg, capsys)

def test_refuse_weights_that_do_not_fit(no_training, folder, tmp_path, capsys):
    torch.save(O.own_model('small', 10)[0].state_dict(), tmp_path/'small.pth')
    _refused(['--data', str(folder), '--arch', 'resnet18', '--weights', str(tmp_path/'small.pth')], 'does not fit resnet18', capsys)

def test_refuse_pretrained_download_failure(no_training, folder, monkeypatch, capsys):
    "Offline (simulated here, so that a machine with internet tests the same): one line naming --no-pretrained and --weights"
    import torchvision.models._api as api
    def offline(*a, **k): raise OSError('<urlopen error [Errno -2] Name or service not known>')
    monkeypatch.setattr(api, 'load_state_dict_from_url', offline)
    _refused(['--data', str(folder), '--arch', 'resnet18'], 'cannot get the pretrained weights of resnet18', capsys)
    # the message names both ways out
    assert main(['--data', str(folder), '--arch', 'resnet18'] + FAST) == 2
    err = capsys.readouterr().err
    assert '--no-pretrained' in err and '--weights FILE' in err

def test_refuse_own_options_without_data(no_training, capsys):
    _refused(['--valid-pct', '0.2'], '--valid-pct needs --data', capsys)

def test_help_groups():
    h = bench_parser().format_help()
    for g in ('data:', 'model:', 'schedule:', 'methods:', 'output:'): assert f'\n{g}\n' in h, g
    assert '--arch NAME, --model NAME' in h and '--freeze-epochs' in h and '--no-pretrained' in h

def test_compare_losses_api(folder, tmp_path):
    "The Python API: one row per method with the difference to CE and its interval; the summary and paired table in attrs"
    dls = O.own_dls(folder, size=32, bs=32)
    df = O.compare_losses(dls, 'resnet18', methods=['ce', 'bs'], epochs=1, seeds=[0], pretrained=False, out=tmp_path/'r', bar=False, threads=1)
    assert df.method.tolist() == ['ce', 'bs'] and {'balanced_mean', 'vs_ce_diff', 'vs_ce_low', 'vs_ce_high'} <= set(df.columns)
    assert math.isclose(df.vs_ce_diff[1], df.balanced_mean[1] - df.balanced_mean[0], abs_tol=1e-6)
    assert 'Balanced Softmax vs CE' in df.attrs['summary'] and len(df.attrs['paired']) == 1

def test_own_model_fine_tune_and_resume(folder, tmp_path, capsys):
    "The package's `small` with fine_tune: its classifier alone first (no switch there); --resume trains only the missing runs"
    out = tmp_path/'r'
    argv = ['--data', str(folder), '--arch', 'small', '--epochs', '2', '--freeze-epochs', '1', '--seeds', '0', '--out', str(out)] + FAST
    assert main(argv + ['--methods', 'swrm']) == 0
    log = (out/'log.txt').read_text()
    assert 'frozen warm-up: no switch' in log and 'SimilarityWindowCallback: epoch 1:' in log
    assert main(argv + ['--methods', 'swrm,ce']) == 2 and 'add --resume' in capsys.readouterr().err
    assert main(argv + ['--methods', 'swrm,ce', '--resume']) == 0
    printed = capsys.readouterr().out
    assert 'resuming' in printed and 'run 1/1: CE' in printed and 'run 1/1: SWRM' not in printed
    assert pd.read_csv(out/'runs.csv').method.tolist() == ['swrm', 'ce'] and 'SWRM vs CE' in (out/'paired.md').read_text()
