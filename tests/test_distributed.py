"SimilarityWindowCallback and DySWRM under torch.distributed: 2 CPU processes (gloo) launched with torch.distributed.run"
import os, subprocess, sys
from pathlib import Path
import pytest, torch
from swrm_fastai.similarity import SimilarityWindow, embed_1d, standardize
from swrm_fastai.callback import class_prototypes

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _ddp_worker as W  # noqa: E402

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(HERE/'_ddp_worker.py'), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [torch.load(out/f'rank{k}.pt', weights_only=False) for k in (0, 1)]

KEYS = ('prototypes', 'positions', 'counts', 'members', 'weights', 'margins', 'init', 'dy_positions', 'dy_steps')

@pytest.mark.parametrize('mode', ['pass', 'last_epoch'])
def test_identical_on_both_ranks(ranks, mode):
    r0, r1 = ranks[0][mode], ranks[1][mode]
    assert r0['loss'] == r1['loss'] == 'DySWRMLoss'
    for k in KEYS: assert torch.equal(r0[k], r1[k]), k
    for k in r0['final']: assert torch.equal(r0['final'][k], r1['final'][k]), k  # DDP kept the models in sync
    assert r0['counts'].tolist() == W.COUNTS
    # DySWRM stepped on both ranks (2 epochs x 3 batches) and its vector moved away from the standardised embedding
    assert int(r0['dy_steps']) == 6
    assert not torch.allclose(r0['dy_positions'], standardize(r0['init'].float()))

def test_equal_single_process(ranks):
    "The all-reduced prototypes and the broadcast window equal a single-process computation on the same model and data"
    r0 = ranks[0]['pass']
    model = W.make_model(); model.load_state_dict(r0['snapshot'])
    dls = W.make_dls()
    protos, counts = class_prototypes(model, dls.train.new(shuffle=False, drop_last=False, bs=7), W.C)
    assert counts.tolist() == W.COUNTS
    torch.testing.assert_close(r0['prototypes'], protos, rtol=1e-6, atol=1e-7)
    # independent reference: mean of the features over each class, one matrix product
    x, y, n_tr = W.make_data()
    with torch.no_grad(): f = model[:-2](x[:n_tr])
    ref = torch.stack([f[y[:n_tr] == c].mean(0) for c in range(W.C)]).float()
    torch.testing.assert_close(r0['prototypes'], ref, rtol=1e-6, atol=1e-7)
    pos = embed_1d(protos, seed=0)
    torch.testing.assert_close(r0['positions'], pos)
    sw = SimilarityWindow(counts, pos, window=3, beta=1.)
    torch.testing.assert_close(r0['weights'], sw.weights.float())
    torch.testing.assert_close(r0['margins'], sw.margins.float())
    assert torch.equal(r0['members'], sw.members)
