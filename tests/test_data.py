"Integration tests of swrm_fastai.data and swrm_fastai.metrics: fake CIFAR / ImageNet-LT / Places-LT trees, a real Fashion-MNIST-LT fit"
import math, os, pickle, shutil
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from torch import nn
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.interpret import ClassificationInterpretation
from fastai.vision.augment import FlipItem
from fastai.torch_core import set_seed
from fastai.callback.progress import *  # noqa: F401,F403 (no_bar)
from fastai.callback.schedule import *  # noqa: F401,F403 (fit_one_cycle)
from swrm_fastai import data as D
from swrm_fastai.data import (long_tail_counts, long_tail_indices, fashion_mnist_lt, cifar_lt, imagenet_lt, places_lt,
                              find_fashion_mnist, find_cifar, FASHION_MNIST_NAMES, DEBIAN_FASHION_MNIST)
from swrm_fastai.metrics import shot_metrics, shot_accuracy_table

HAS_FMNIST = (DEBIAN_FASHION_MNIST/'train-images-idx3-ubyte.gz').is_file() or bool(os.environ.get('SWRM_DATA'))

# ---------------------------------------------------------------- fake CIFAR in both layouts
def fake_cifar(n_classes, n_train, n_test, seed=0):
    "Random uint8 CIFAR-like arrays, sorted class names (as the real ones are)"
    rng = np.random.default_rng(seed)
    names = [f'class_{c:03d}' for c in range(n_classes)]
    y_tr, y_te = np.repeat(np.arange(n_classes), n_train), np.repeat(np.arange(n_classes), n_test)
    rng.shuffle(y_tr)
    x_tr = rng.integers(0, 256, (len(y_tr), 32, 32, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (len(y_te), 32, 32, 3), dtype=np.uint8)
    return x_tr, y_tr, x_te, y_te, names

def write_pickles(d, n_classes, x_tr, y_tr, x_te, y_te, names):
    "torchvision layout: cifar-10-batches-py/data_batch_1..5,test_batch,batches.meta or cifar-100-python/{train,test,meta}"
    flat = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    def dump(f, o):
        with open(f, 'wb') as fh: pickle.dump(o, fh)
    if n_classes == 10:
        d = d/'cifar-10-batches-py'; d.mkdir(parents=True)
        for i, part in enumerate(np.array_split(np.arange(len(y_tr)), 5), 1):
            dump(d/f'data_batch_{i}', {'data': flat(x_tr[part]), 'labels': y_tr[part].tolist()})
        dump(d/'test_batch', {'data': flat(x_te), 'labels': y_te.tolist()})
        dump(d/'batches.meta', {'label_names': names})
    else:
        d = d/'cifar-100-python'; d.mkdir(parents=True)
        dump(d/'train', {'data': flat(x_tr), 'fine_labels': y_tr.tolist(), 'coarse_labels': (y_tr // 5).tolist()})
        dump(d/'test', {'data': flat(x_te), 'fine_labels': y_te.tolist(), 'coarse_labels': (y_te // 5).tolist()})
        dump(d/'meta', {'fine_label_names': names, 'coarse_label_names': [f's{i}' for i in range(n_classes // 5)]})
    return d

def write_folders(d, x_tr, y_tr, x_te, y_te, names, superclass=False):
    "fastai untar_data layout: train/<class>/*.png and test/<class>/*.png (optionally train/<superclass>/<class>/)"
    for split, x, y in (('train', x_tr, y_tr), ('test', x_te, y_te)):
        for i, (img, c) in enumerate(zip(x, y)):
            f = d/split/(f'super_{c // 5:02d}' if superclass else '')/names[c]/f'{i:05d}.png'
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(f)
    return d

@pytest.mark.parametrize('n_classes,n_train,nested', [(10, 12, False), (100, 3, True)])
def test_cifar_both_layouts_agree(tmp_path, n_classes, n_train, nested):
    x_tr, y_tr, x_te, y_te, names = fake_cifar(n_classes, n_train, 2)
    pk = write_pickles(tmp_path/'tv', n_classes, x_tr, y_tr, x_te, y_te, names)
    fo = write_folders(tmp_path/('cifar10' if n_classes == 10 else 'cifar100'), x_tr, y_tr, x_te, y_te, names, superclass=nested)
    for path, layout in ((tmp_path/'tv', 'pickle'), (pk, 'pickle'), (fo, 'folder')):   # parent folder, batches folder, PNG folders
        dls = cifar_lt(n_classes, imb_factor=n_train, n_max=n_train, path=path, seed=3, bs=8, batch_tfms=[])
        assert list(dls.vocab) == names and dls.class_names == names
        expected = long_tail_counts(n_train, n_classes, n_train)
        assert dls.class_counts.tolist() == expected.tolist()
        assert len(dls.train_ds) == expected.sum() and len(dls.valid_ds) == 2 * n_classes   # balanced test set
        assert torch.bincount(torch.stack([dls.valid_ds[i][1] for i in range(len(dls.valid_ds))]), minlength=n_classes).tolist() == [2] * n_classes
        # the kept images are those long_tail_indices picks, in the layout's sample order (PNG files: sorted paths)
        order = np.arange(len(y_tr)) if layout == 'pickle' else np.argsort(y_tr, kind='stable')
        keep = order[long_tail_indices(y_tr[order], expected, seed=3).numpy()]
        imgs = torch.stack([dls.train_ds[i][0] for i in range(len(dls.train_ds))])
        assert torch.equal(imgs, torch.from_numpy(x_tr[keep]).permute(0, 3, 1, 2))
        assert [int(dls.train_ds[i][1]) for i in range(len(dls.train_ds))] == y_tr[keep].tolist()
        test_order = np.arange(len(y_te)) if layout == 'pickle' else np.argsort(y_te, kind='stable')
        assert torch.equal(torch.stack([dls.valid_ds[i][0] for i in range(len(dls.valid_ds))]), torch.from_numpy(x_te[test_order]).permute(0, 3, 1, 2))
        xb, yb = dls.one_batch()
        assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32

def test_cifar_default_augmentation_and_stats(tmp_path):
    x_tr, y_tr, x_te, y_te, names = fake_cifar(10, 20, 3)
    write_pickles(tmp_path, 10, x_tr, y_tr, x_te, y_te, names)
    dls = cifar_lt(10, imb_factor=10, n_max=20, path=tmp_path, bs=16)
    tfms = [type(t).__name__ for t in dls.train.after_batch.fs]
    assert tfms == ['IntToFloatTensor', 'PadCropFlip', 'Normalize']
    mean = torch.tensor(D.CIFAR_STATS[10][0]).view(1, 3, 1, 1)
    assert torch.allclose(dls.valid.after_batch.fs[-1].mean.cpu(), mean)
    # validation batches are not augmented: equal to the normalised raw test images
    xb, yb = dls.valid.one_batch()
    raw = torch.from_numpy(x_te[:16]).permute(0, 3, 1, 2).float() / 255
    std = torch.tensor(D.CIFAR_STATS[10][1]).view(1, 3, 1, 1)
    assert torch.allclose(xb.cpu(), (raw - mean) / std, atol=1e-5)

def test_cifar_missing_and_bad(tmp_path, monkeypatch):
    monkeypatch.setenv('SWRM_DATA', str(tmp_path/'nothing'))
    with pytest.raises(FileNotFoundError) as e: find_cifar(100)
    msg = str(e.value)
    assert str(tmp_path/'nothing'/'cifar-100-python') in msg and str(tmp_path/'nothing'/'cifar100') in msg
    assert 'untar_data(URLs.CIFAR_100)' in msg and 'CIFAR100(root, download=True)' in msg
    with pytest.raises(FileNotFoundError, match='cifar10'): cifar_lt(10, path=tmp_path/'nothing')
    with pytest.raises(ValueError, match='n_classes must be 10 or 100'): cifar_lt(20, path=tmp_path)
    x_tr, y_tr, x_te, y_te, names = fake_cifar(10, 5, 1)
    write_pickles(tmp_path, 10, x_tr, y_tr, x_te, y_te, names)
    with pytest.raises(ValueError, match='imb_factor'): cifar_lt(10, imb_factor=0.5, n_max=5, path=tmp_path)
    with pytest.raises(ValueError, match='classes 7, 8, 9 would get 0 images'): cifar_lt(10, imb_factor=10, n_max=5, path=tmp_path)
    with pytest.raises(ValueError, match='class 0 is asked for 5000 samples but labels have only 5'): cifar_lt(10, path=tmp_path)

# ---------------------------------------------------------------- fake ImageNet-LT / Places-LT
def fake_split_tree(root, prefix, train_per_class, test_per_class, split_dir=None):
    rng = np.random.default_rng(0)
    split_dir = split_dir or root
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, per in (('train', train_per_class), ('val', test_per_class), ('test', test_per_class)):
        lines = []
        for c, n in enumerate(per):
            for i in range(n):
                rel = f'{split}/c{c}/img_{i}.jpg'
                (root/rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(root/rel)
                lines.append(f'{rel} {c}')
        (split_dir/f'{prefix}_{split}.txt').write_text('\n'.join(lines) + '\n')
    return root

@pytest.mark.parametrize('fn,prefix', [(imagenet_lt, 'ImageNet_LT'), (places_lt, 'Places_LT')])
def test_split_file_datasets(tmp_path, fn, prefix):
    root = fake_split_tree(tmp_path/'imgs', prefix, [5, 3, 2, 1], [2, 2, 2, 2], split_dir=tmp_path/'splits')
    dls = fn(root, tmp_path/'splits', bs=4, size=24, num_workers=0)
    assert dls.class_counts.tolist() == [5, 3, 2, 1] and list(dls.vocab) == ['0', '1', '2', '3']
    assert len(dls.valid_ds) == 8
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 24, 24) and yb.shape == (4,)
    xv, yv = dls.valid.one_batch()
    assert xv.shape == (4, 3, 24, 24)
    names = ['w', 'x', 'y', 'z']
    dv = fn(root, tmp_path/'splits', valid='val', names=names, bs=2, size=16, num_workers=0)
    assert list(dv.vocab) == names and dv.class_names == names
    # a line naming a missing image: ValueError with the file and its line number
    f = tmp_path/'splits'/f'{prefix}_train.txt'
    lines = f.read_text().splitlines()
    lines[6] = 'train/c9/missing.jpg 3'
    f.write_text('\n'.join(lines))
    with pytest.raises(ValueError, match=rf'{prefix}_train.txt, line 7: image .*missing.jpg does not exist'): fn(root, tmp_path/'splits')
    lines[6] = 'train/c1/img_0.jpg three'
    f.write_text('\n'.join(lines))
    with pytest.raises(ValueError, match=r'line 7: expected `path label`'): fn(root, tmp_path/'splits')
    with pytest.raises(FileNotFoundError, match=f'{prefix}_train.txt.*OpenLongTailRecognition'): fn(root, tmp_path/'elsewhere')

# ---------------------------------------------------------------- Fashion-MNIST-LT
def test_fashion_missing_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv('SWRM_DATA', str(tmp_path/'data'))
    monkeypatch.setattr(D, 'DEBIAN_FASHION_MNIST', tmp_path/'debian')
    with pytest.raises(FileNotFoundError) as e: find_fashion_mnist(download=False)
    msg = str(e.value)
    for p in (tmp_path/'data', tmp_path/'data'/'fashion-mnist', tmp_path/'debian'): assert str(p) in msg
    assert 'apt-get install dataset-fashion-mnist' in msg and 'SWRM_DATA' in msg
    with pytest.raises(FileNotFoundError, match=str(tmp_path/'given')): fashion_mnist_lt(path=tmp_path/'given')

@pytest.mark.skipif(not HAS_FMNIST, reason='needs Fashion-MNIST (apt-get install dataset-fashion-mnist)')
def test_fashion_found_through_swrm_data(tmp_path, monkeypatch):
    src = find_fashion_mnist(download=False)
    (tmp_path/'fashion-mnist').mkdir()
    for f in src.iterdir(): (tmp_path/'fashion-mnist'/f.name).symlink_to(f)
    monkeypatch.setenv('SWRM_DATA', str(tmp_path))
    assert find_fashion_mnist(download=False) == tmp_path/'fashion-mnist'

@pytest.mark.skipif(not HAS_FMNIST, reason='needs Fashion-MNIST (apt-get install dataset-fashion-mnist)')
def test_fashion_mnist_lt_fit_export_interpret(tmp_path):
    set_seed(0)
    dls = fashion_mnist_lt(imb_factor=100, bs=256, dls_path=tmp_path)
    counts = long_tail_counts(6000, 10, 100)
    assert dls.class_counts.tolist() == counts.tolist() and dls.class_counts.sum() == 14886
    assert list(dls.vocab) == FASHION_MNIST_NAMES and len(dls.valid_ds) == 10000
    # counts from the actual training labels, and a balanced validation set
    assert torch.bincount(torch.tensor([int(dls.train_ds[i][1]) for i in range(0, len(dls.train_ds))]), minlength=10).tolist() == counts.tolist()
    # shot groups of Fashion-MNIST-LT at 100: 6000..166 many, 100 and 60 medium, none few -> few shows as missing
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=shot_metrics(dls.class_counts))
    learn.remove_cb(ProgressCallback)
    learn.fit_one_cycle(1, 1e-2)
    names = learn.recorder.metric_names[-5:-1]
    vals = dict(zip(names, learn.recorder.values[-1][-4:]))
    assert names == ['accuracy', 'many_acc', 'medium_acc', 'few_acc']
    assert vals['accuracy'] > 0.3 and math.isnan(vals['few_acc'])
    preds, targs = learn.get_preds()
    summary, table = shot_accuracy_table(preds, targs, dls.class_counts, names=list(dls.vocab))
    assert abs(summary['overall'] - vals['accuracy']) < 1e-6 and abs(summary['many'] - vals['many_acc']) < 1e-6
    assert abs(summary['medium'] - vals['medium_acc']) < 1e-6 and summary['n_few'] == 0
    assert table.n_valid.tolist() == [1000] * 10
    interp = ClassificationInterpretation.from_learner(learn)
    assert list(interp.vocab) == FASHION_MNIST_NAMES and interp.confusion_matrix().sum() == 10000
    # export / reload: the image tables are not pickled, counts survive, prediction on a raw image works
    learn.export('fm.pkl')
    assert (tmp_path/'fm.pkl').stat().st_size < 2_000_000
    learn2 = load_learner(tmp_path/'fm.pkl')
    learn2.remove_cb(ProgressCallback)
    assert learn2.dls.class_counts.tolist() == counts.tolist() and learn2.dls.class_names == FASHION_MNIST_NAMES
    x_raw = D.load_fashion_mnist(download=False)[2][0]
    pred, idx, probs = learn2.predict(x_raw)
    lp = learn.model.eval()(dls.valid.one_batch()[0][:1])
    assert pred == FASHION_MNIST_NAMES[int(lp.argmax())] and probs.shape == (10,)

@pytest.mark.skipif(not HAS_FMNIST, reason='needs Fashion-MNIST (apt-get install dataset-fashion-mnist)')
def test_fashion_fast_path_equals_fastai_path_and_is_fast():
    import time
    fast = fashion_mnist_lt(bs=64, batch_tfms=[], seed=5)
    slow = fashion_mnist_lt(bs=64, batch_tfms=[], seed=5, item_tfms=[FlipItem(p=0.)])   # item tfm: item-by-item path
    assert fast.valid._tables() is not None and slow.valid._tables() is None
    xf, yf = fast.valid.one_batch(); xs, ys = slow.valid.one_batch()
    assert torch.equal(xf, xs) and torch.equal(yf, ys) and type(xf) == type(xs) and type(yf) == type(ys)
    assert torch.equal(fast.class_counts, slow.class_counts)
    dls = fashion_mnist_lt(bs=128)
    start = time.perf_counter()
    n = sum(len(yb) for _, yb in dls.train)   # one epoch with augmentation: ~0.2 s on one idle core, vs ~6 s item by item
    assert n == 14886 // 128 * 128 and time.perf_counter() - start < 10

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.skipif(not HAS_FMNIST, reason='needs Fashion-MNIST')
def test_fashion_on_cuda():
    dls = fashion_mnist_lt(bs=256, device='cuda')
    xb, yb = dls.one_batch()
    assert xb.device.type == 'cuda' and yb.device.type == 'cuda'
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).cuda()
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=shot_metrics(dls.class_counts), cbs=[])
    learn.remove_cb(ProgressCallback)
    learn.fit(1, 1e-3)
    preds, targs = learn.get_preds()
    summary, _ = shot_accuracy_table(preds, targs, dls.class_counts)
    assert abs(learn.recorder.values[-1][-4] - summary['overall']) < 1e-6

# ---------------------------------------------------------------- Glyphs-LT
def _has_glyph_fonts():
    try: D.glyph_font_files(); return True
    except ValueError: return False

HAS_GLYPH_FONTS = _has_glyph_fonts()
needs_fonts = pytest.mark.skipif(not HAS_GLYPH_FONTS, reason='needs the Glyphs-LT fonts (`make data` as root)')
TRAIN_NAMES = [f for _, fs in D.GLYPH_FONTS['train'].values() for f in fs]
TEST_NAMES = [f for _, fs in D.GLYPH_FONTS['test'].values() for f in fs]
SMALL = dict(n_max=30, imb_factor=10, n_test=4, classes="oO0lI1|,.'`",
             fonts=dict(train=['DejaVuSans.ttf', 'LiberationSerif-Regular.ttf', 'FreeMono.ttf'], test=['Carlito-Regular.ttf', 'Inconsolata.otf']))

def test_glyph_counts_without_drawing():
    "CIFAR-100-LT's counts at the default setting (10,847 images, 500 down to 5), head to tail in a seeded random class order"
    c = long_tail_counts(500, len(D.GLYPH_CLASSES), 100)
    assert len(D.GLYPH_CLASSES) == len(set(D.GLYPH_CLASSES)) == 100
    assert c.sum() == 10847 and c[0] == 500 and c[-1] == 5
    order = D.glyph_class_order(100, seed=0)
    assert sorted(order.tolist()) == list(range(100)) and (order != np.arange(100)).any()
    assert (order == D.glyph_class_order(100, seed=0)).all() and (order != D.glyph_class_order(100, seed=1)).any()

def test_glyph_font_split_is_disjoint():
    "At least 6 training and 3 test faces; no face and no family on both sides"
    assert len(TRAIN_NAMES) >= 6 and len(TEST_NAMES) >= 3 and len(set(TRAIN_NAMES + TEST_NAMES)) == len(TRAIN_NAMES + TEST_NAMES)
    assert not set(D.GLYPH_FONTS['train']) & set(D.GLYPH_FONTS['test'])
    assert all(c in D.GLYPH_CLASSES for g in D.GLYPH_LOOKALIKES for c in g)

def test_glyph_missing_fonts_one_line(tmp_path):
    "An empty font folder: one ValueError line naming the folder, the missing files and the packages to install"
    with pytest.raises(ValueError) as e: D.glyphs_lt(font_dir=tmp_path, cache_dir=tmp_path)
    msg = str(e.value)
    assert '\n' not in msg and f'{len(TRAIN_NAMES + TEST_NAMES)} font files not found under {tmp_path}' in msg
    pkgs = [p for side in ('train', 'test') for p, _ in D.GLYPH_FONTS[side].values()]
    assert f"sudo apt-get install {' '.join(pkgs)}" in msg and 'make data' in msg
    assert not list(tmp_path.glob('*.npz'))

@needs_fonts
def test_glyph_every_font_draws_every_class():
    "Every face has every one of the 100 characters (a missing glyph raises instead of drawing a box)"
    files = D.glyph_font_files()
    assert [f.name for f in files['train']] == TRAIN_NAMES and [f.name for f in files['test']] == TEST_NAMES
    for f in files['train'] + files['test']:
        x = D.render_glyphs(np.arange(100), D.GLYPH_CLASSES, [f], seed=0)
        assert x.shape == (100, 28, 28) and x.dtype == np.uint8

@needs_fonts
def test_glyph_train_and_test_drawn_from_their_own_fonts(monkeypatch):
    "The training images are drawn with the training faces only, the test images with the test faces only"
    seen, real = [], D.render_glyphs
    def spy(labels, chars, font_files, *args, **kwargs):
        seen.append((len(labels), [Path(f).name for f in font_files]))
        return real(labels, chars, font_files, *args, **kwargs)
    monkeypatch.setattr(D, 'render_glyphs', spy)
    x_tr, y_tr, x_te, y_te = D.load_glyphs(n_max=6, imb_factor=3, n_test=2, classes='oO0', cache=False)
    assert seen == [(len(y_tr), TRAIN_NAMES), (len(y_te), TEST_NAMES)]
    assert sorted(np.bincount(y_tr).tolist()) == sorted(long_tail_counts(6, 3, 3).tolist()) and np.bincount(y_te).tolist() == [2, 2, 2]

@needs_fonts
def test_glyph_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    a = D.load_glyphs(**SMALL, cache_dir=tmp_path)
    b = D.load_glyphs(**SMALL, cache=False)                          # drawn again: the same bytes
    assert all(u.dtype == v.dtype and u.tobytes() == v.tobytes() for u, v in zip(a, b))
    assert len(list(tmp_path.glob('glyphs-lt-*.npz'))) == 1
    def boom(*args, **kwargs): raise AssertionError('drew again')
    monkeypatch.setattr(D, 'render_glyphs', boom)
    c = D.load_glyphs(**SMALL, cache_dir=tmp_path)                   # read from the file, not drawn
    assert all(np.array_equal(u, v) for u, v in zip(a, c))
    other = {**SMALL, 'fonts': dict(train=['DejaVuSans.ttf'], test=['Carlito-Regular.ttf'])}
    with pytest.raises(AssertionError, match='drew again'): D.load_glyphs(**other, cache_dir=tmp_path)   # another font set
    with pytest.raises(AssertionError, match='drew again'): D.load_glyphs(**{**SMALL, 'seed': 1}, cache_dir=tmp_path)

@needs_fonts
def test_glyph_small_dataloaders(tmp_path):
    torch.set_num_threads(1)
    dls = D.glyphs_lt(**SMALL, cache_dir=tmp_path, bs=16)
    C = len(SMALL['classes'])
    assert list(dls.vocab) == list(SMALL['classes'])
    assert dls.class_counts[torch.as_tensor(D.glyph_class_order(C))].tolist() == long_tail_counts(30, C, 10).tolist()
    assert dls.valid_ds.tls[1].tfms[0].labels[-len(dls.valid_ds):].bincount().tolist() == [4] * C   # balanced test set
    assert dls.lookalikes == [('o', 'O', '0'), ('l', 'I', '1', '|'), (',', '.'), ("'", '`')]
    xb, yb = dls.one_batch()
    assert xb.shape == (16, 1, 28, 28) and all(getattr(t, 'p_flip', 0) == 0 for t in dls.train.after_batch.fs)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, C))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[])
    learn.remove_cb(ProgressCallback)
    learn.fit(1, 1e-3)
    assert learn.get_preds()[0].shape == (len(dls.valid_ds), C)

@needs_fonts
def test_glyph_bad_arguments(tmp_path):
    for kw, msg in [(dict(n_max=5), 'would get 0 images'), (dict(n_test=0), 'n_test must be'), (dict(classes='oo'), "'o' is repeated"),
                    (dict(classes=['oo']), 'single printable'), (dict(size=4), 'size must be'),
                    (dict(fonts=dict(train=['DejaVuSans.ttf'], test=['DejaVuSans.ttf'])), 'disjoint')]:
        with pytest.raises(ValueError, match=msg): D.load_glyphs(**{**SMALL, **kw}, cache_dir=tmp_path)

@pytest.mark.slow
@needs_fonts
def test_glyph_full_build_twice(tmp_path):
    "The full default build (10,847 + 10,000 images) twice, without a cache: the same bytes"
    a, b = D.load_glyphs(cache=False), D.load_glyphs(cache=False)
    assert len(a[0]) == 10847 and len(a[2]) == 10000 and all(u.tobytes() == v.tobytes() for u, v in zip(a, b))

def test_predict_on_read_only_arrays_is_silent():
    "The package's cached arrays are read-only: predicting on one of them gives no torch 'not writable' warning"
    import warnings
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8); y = np.repeat(np.arange(4), 10)
    x.flags.writeable = False
    dls = D.images_dls(x[:32], y[:32], x[32:], y[32:], list('abcd'), bs=8, batch_tfms=[])
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*not writable')
        pred = learn.predict(x[0])
    assert pred[0] in list('abcd') and not x.flags.writeable
