#!/usr/bin/env bash
# GPU check of the two-stage callbacks (issue 4): run on a machine with a CUDA device, from anywhere.
#   1. every CUDA-marked test (`pytest -m cuda`), which are skipped on CPU-only CI;
#   2. a short two-stage fit on CUDA (resnet18, to_fp16, MixUp) for SWRM, DySWRM and LDAM-DRW that prints where
#      every parameter and buffer of the model, the swapped loss and the similarity window lives, and the switch cost.
# Exits non-zero if CUDA is missing, a test fails, or anything of the swapped loss/window is off the model's device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" - <<'PYEOF'
import torch, sys
if not torch.cuda.is_available(): sys.exit("gpu_check: no CUDA device visible to torch")
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PYEOF
"$PY" -m pytest -q -m cuda tests -p no:cacheprovider
"$PY" - <<'PYEOF'
import sys, tempfile, warnings
from pathlib import Path
import torch
sys.path.insert(0, 'tests')
from test_callback import write_images, make_learner, LossLog
from fastai.vision.all import MixUp
from swrm_fastai.callback import SimilarityWindowCallback, DeferredReweighting
from swrm_fastai.losses import LDAMLoss
from swrm_fastai.data import class_counts
warnings.simplefilter('ignore')

def where(name, module):
    devs = {}
    for k, v in list(module.named_parameters()) + list(module.named_buffers()): devs.setdefault(str(v.device), []).append(k)
    for d, ks in devs.items(): print(f"  {name}: {len(ks)} tensors on {d}" + (f" ({', '.join(ks)})" if len(ks) <= 8 else ''))
    return set(devs)

root = write_images(Path(tempfile.mkdtemp()))
bad = []
for loss in ('swrm', 'dyswrm', 'dyswrm-tsne', 'ldam-drw'):
    log = LossLog(snap_epoch=1)
    if loss == 'ldam-drw':
        learn = make_learner(root, cbs=[log, MixUp(), DeferredReweighting(1)])
        learn.loss_func = LDAMLoss(class_counts(learn.dls))
    else:
        learn = make_learner(root, cbs=[log, MixUp(), SimilarityWindowCallback(1, window=5, loss=loss)])
    learn.to_fp16()
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-3)
    dev = next(learn.model.parameters()).device
    print(f"[{loss}] losses per epoch: {log.types}; last train loss {log.losses[-1]:.4f}; model on {dev}")
    found = where('model', learn.model) | where(type(learn.loss_func).__name__, learn.loss_func)
    sw = getattr(learn, 'similarity_window', None)
    if sw is not None:
        tens = {k: getattr(sw, k) for k in ('counts', 'positions', 'order', 'ranks', 'members', 'weights', 'margins')}
        print("  similarity_window: " + ", ".join(f"{k} on {v.device}" for k, v in tens.items()))
        found |= {str(v.device) for v in tens.values()}
        print("  switch cost (s):", {k: round(v, 3) for k, v in learn.swrm_switch.switch_cost().items()})
    if found != {str(dev)}: bad.append((loss, found))
    learn.save(f'gpu_{loss}'); fresh = make_learner(root); fresh.load(f'gpu_{loss}')
    print(f"  after save/load: {type(fresh.loss_func).__name__}; devices {where('reloaded loss', fresh.loss_func)}")
if bad: sys.exit(f"gpu_check: tensors off the model's device: {bad}")
print("gpu_check: OK")
PYEOF
