"""Worker for tests/test_distributed.py, launched as `python -m torch.distributed.run --nproc_per_node 2 tests/_ddp_worker.py OUT_DIR`.

Each rank runs the same two-stage fit under DistributedDataParallel on CPU (gloo): every rank trains on every
`world_size`-th training sample, `SimilarityWindowCallback` switches to DySWRM at epoch 1, and the rank saves what it
ended with (prototypes, window, DySWRM vector, a snapshot of the model at the switch) to OUT_DIR/rank{r}.pt.
The model is float64 so that features do not depend on how samples are batched (the 1-D t-SNE amplifies float32
rounding), which lets the test compare with a single-process computation exactly.
fastai's own `learn.distrib_ctx()` needs `accelerate` and CUDA (its `DistributedDL` broadcasts through CUDA), so this
worker wraps the model with a minimal callback doing the same two things on CPU."""
import copy, os, sys
import torch, torch.nn as nn
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.data.core import Datasets
from fastai.data.transforms import Categorize
from fastai.losses import CrossEntropyLossFlat
import fastai.callback.progress  # noqa: F401  (Learner.no_bar)

COUNTS = [30, 20, 14, 10, 7, 5, 4, 4]  # 94 training samples: 47 per rank
C, D, BS = len(COUNTS), 6, 16
VOCAB = [f'c{i}' for i in range(C)]

def make_data(seed=0):
    "Deterministic long-tailed Gaussian clusters: training set in class order, then 3 validation samples per class"
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=g, dtype=torch.float64) * 2
    y_tr = torch.repeat_interleave(torch.arange(C), torch.tensor(COUNTS))
    y_va = torch.arange(C).repeat(3)
    y = torch.cat([y_tr, y_va])
    x = centres[y] + torch.randn(len(y), D, generator=g, dtype=torch.float64)
    return x, y, len(y_tr)

class _Item:
    def __init__(self, x): self.x = x
    def __call__(self, i): return self.x[i]
class _Label:
    def __init__(self, y): self.y = y
    def __call__(self, i): return VOCAB[int(self.y[i])]

def make_dls(bs=BS):
    x, y, n_tr = make_data()
    splits = [list(range(n_tr)), list(range(n_tr, len(y)))]
    dsets = Datasets(list(range(len(y))), tfms=[[_Item(x)], [_Label(y), Categorize(vocab=VOCAB)]], splits=splits)
    return dsets.dataloaders(bs=bs, num_workers=0, shuffle=False)

class ToFloat(nn.Module):
    "float32 logits (fastai's Recorder averages losses in float32)"
    def forward(self, x): return x.float()

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, C), ToFloat()).double()

class CPUDistributed(Callback):
    "Minimal DDP for CPU tests: wrap the model in DistributedDataParallel, train each rank on every world-th sample"
    order = 11
    def before_fit(self): self.learn.model = DistributedDataParallel(self.learn.model)
    def before_train(self):
        r, w = dist.get_rank(), dist.get_world_size()
        idxs = list(range(len(self.dls.train_ds)))[r::w]
        self.learn.dl = self.dls.train.new(shuffle=False, drop_last=False, get_idxs=lambda: idxs, n=len(idxs))
    def after_fit(self): self.learn.model = self.learn.model.module

class Snapshot(Callback):
    "A copy of the (unwrapped) model's weights when the switch epoch starts"
    order = -1
    def __init__(self, epoch): self.at, self.state = epoch, None
    def before_epoch(self):
        if self.epoch == self.at and self.state is None:
            m = getattr(self.learn.model, 'module', self.learn.model)
            self.state = copy.deepcopy(m.state_dict())

def run(out_dir):
    from swrm_fastai.callback import SimilarityWindowCallback
    torch.set_num_threads(1)
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    try:
        res = {}
        for mode in ('pass', 'last_epoch'):
            cb = SimilarityWindowCallback(start_epoch=1, window=3, beta=1., loss='dyswrm-tsne', prototypes=mode, verbose=False,
                                          loss_kwargs=dict(lr=0.05))
            snap = Snapshot(1)
            learn = Learner(make_dls(), make_model(), loss_func=CrossEntropyLossFlat(), cbs=[snap, cb, CPUDistributed()])
            with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-2)
            sw, lf = learn.similarity_window, learn.loss_func
            res[mode] = dict(prototypes=cb.switch_prototypes, positions=sw.positions, counts=sw.counts, members=sw.members,
                             weights=sw.weights, margins=sw.margins, init=cb.switch_window.positions,
                             dy_positions=lf.positions.detach().clone(), dy_steps=lf.n_steps.clone(),
                             loss=type(lf).__name__, snapshot=snap.state,
                             final=copy.deepcopy(learn.model.state_dict()))
        torch.save(res, os.path.join(out_dir, f'rank{rank}.pt'))
        dist.barrier()  # nobody tears gloo down while the other rank still talks to it
    finally: dist.destroy_process_group()

if __name__ == '__main__': run(sys.argv[1])
