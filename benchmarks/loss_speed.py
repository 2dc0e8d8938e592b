"""Forward+backward time of every swrm_fastai loss relative to `F.cross_entropy` on the same logits.

For each number of classes C and batch size B, all losses are timed side by side in one run: in every round each loss
(and `F.cross_entropy`) runs `--iters` forward+backward passes on the same float32 logits, the order of the losses
is shuffled per round, and the ratio printed is min(loss) / min(cross-entropy) over `--rounds` rounds (the best round
is the one least disturbed by other work, as `timeit` recommends). Only the
loss is timed (no model). DySWRM's time includes its gradient hook (the Adam step on the class positions).
Each loss gets the logits it is meant for: LDAM those of a cosine head (cosines of random unit features and class
vectors, in [-1, 1], which it scales by s = 30), every other loss standard normal logits. On the CPU the table also
shows LDAM on standard normal logits, where `s * z` reaches -100 and below and `exp` returns subnormal floats, which
x86 CPUs process very slowly, and the same with `torch.set_flush_denormal(True)`.
On the CPU the clock is the process's CPU time (so other processes on the same cores do not inflate one loss more than
another; use `--threads 1` on a shared machine), on a GPU the wall time between synchronisations.

    python benchmarks/loss_speed.py                 # CPU, C in {10, 100, 1000}, B in {128, 512}
    python benchmarks/loss_speed.py --device cuda   # on a GPU

On Linux the CPU run first tells glibc to keep freed memory (`steady_malloc`), so that large tensors are not
page-faulted anew at every call; `--system-malloc` measures with the default allocator instead.
"""
import argparse, ctypes, ctypes.util, platform, random, time
import torch
import torch.nn.functional as F
from swrm_fastai.data import long_tail_counts
from swrm_fastai.similarity import SimilarityWindow
from swrm_fastai.losses import (SWRMLoss, SWRLoss, SWMLoss, DySWRMLoss, ClassBalancedLoss, LDAMLoss, LogitAdjustedLoss,
                                BalancedSoftmaxLoss)
from swrm_fastai.experiments import PairwiseWindowLoss


def make_losses(C, seed=0):
    counts = long_tail_counts(1000, C, 100)  # exponential profile, head 1000, imbalance 100
    W = min(15, C)
    sw = SimilarityWindow(counts, torch.randn(C, generator=torch.Generator().manual_seed(seed)), window=W)
    return {
        'F.cross_entropy': F.cross_entropy,
        'SWRM': SWRMLoss.from_window(sw),
        'SWRM (check=False)': SWRMLoss.from_window(sw, check=False),
        'SWR': SWRLoss.from_window(sw),
        'SWM': SWMLoss.from_window(sw),
        'DySWRM': DySWRMLoss(counts, window=W),
        'DySWRM (pull=1)': DySWRMLoss(counts, window=W, pull=1.),
        'PairwiseWindow': PairwiseWindowLoss.from_window(sw),
        'ClassBalanced': ClassBalancedLoss(counts),
        'ClassBalanced focal': ClassBalancedLoss(counts, gamma=1.),
        'LDAM': LDAMLoss(counts),
        'LDAM (randn logits)': LDAMLoss(counts),
        'LogitAdjusted': LogitAdjustedLoss(counts),
        'BalancedSoftmax': BalancedSoftmaxLoss(counts),
    }


COSINE = {'LDAM'}  # losses meant for a cosine head's logits

def cosine_logits(B, C, g, dim=64):
    "Logits of a cosine classifier: cosines between B random unit features and C random unit class vectors"
    f = F.normalize(torch.randn(B, dim, generator=g), dim=1); w = F.normalize(torch.randn(C, dim, generator=g), dim=1)
    return f @ w.T

def timed(fn, z, y, iters, sync, clock):
    sync()
    t = clock()
    for _ in range(iters):
        z.grad = None
        fn(z, y).backward()
    sync()
    return (clock() - t) / iters


def bench(C, B, device, rounds, iters, seed=0, only=None):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g).to(device).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g).to(device)
    zc = cosine_logits(B, C, g).to(device).requires_grad_()
    losses = make_losses(C, seed)
    if device.type != 'cpu': losses.pop('LDAM (randn logits)')
    if only is not None: losses = {k: v for k, v in losses.items() if k in only}
    inp = {k: zc if k in COSINE else z for k in losses}
    for lf in losses.values():
        if isinstance(lf, torch.nn.Module): lf.to(device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    # CPU: CPU time of this process, robust to other processes sharing the cores; GPU: wall time after synchronising
    clock = time.perf_counter if device.type == 'cuda' else time.process_time
    for k, fn in losses.items(): timed(fn, inp[k], y, 3, sync, clock)  # warm-up
    times = {k: [] for k in losses}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(losses); rng.shuffle(order)
        for k in order: times[k].append(timed(losses[k], inp[k], y, iters, sync, clock))
    return {k: min(v) for k, v in times.items()}  # best round: the least disturbed by other processes (as timeit)


def steady_malloc():
    """Keep freed memory in glibc's heap instead of returning it to the system after every large free.

    A [512, 1000] float32 tensor is 2 MB, above glibc's mmap threshold: by default each such tensor is a fresh `mmap`,
    and the first touch of every 4 KB page is a page fault. Which loss pays for them depends on the allocator's history
    (in a virtual machine a run can show cross-entropy at 0.6 ms or 1.0 ms, and any loss 1x to 5x slower), so the
    ratios would measure page faults, not losses. Reusing memory is what PyTorch's CUDA caching allocator (and the
    jemalloc/tcmalloc that PyTorch's CPU tuning guide recommends) does anyway. Returns whether it could be set."""
    path = ctypes.util.find_library('c')
    if platform.system() != 'Linux' or not path: return False
    try: libc = ctypes.CDLL(path)
    except OSError: return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--classes', type=int, nargs='+', default=[10, 100, 1000])
    ap.add_argument('--batch', type=int, nargs='+', default=[128, 512])
    ap.add_argument('--rounds', type=int, default=15)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    ap.add_argument('--system-malloc', action='store_true', help="keep glibc's default (page faults on large tensors)")
    a = ap.parse_args()
    steady = False if a.system_malloc else steady_malloc()
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cols = [(C, B) for C in a.classes for B in a.batch]
    res = {cb: bench(*cb, device, a.rounds, a.iters) for cb in cols}
    names = list(next(iter(res.values())))
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    clock = 'wall time' if device.type == 'cuda' else 'process CPU time'
    print(f'Forward+backward time relative to F.cross_entropy (best of {a.rounds} rounds x {a.iters} passes, {clock}; '
          f'{device.type}: {where}; torch {torch.__version__}; '
          f'{"glibc keeps freed memory" if steady else "system malloc"})\n')
    print('| loss | ' + ' | '.join(f'C={C}, B={B}' for C, B in cols) + ' |')
    print('|---|' + '---:|' * len(cols))
    for n in names:
        print(f'| {n} | ' + ' | '.join(f'{res[cb][n] / res[cb]["F.cross_entropy"]:.2f}x' for cb in cols) + ' |')
    print('| *F.cross_entropy, ms* | ' + ' | '.join(f'{res[cb]["F.cross_entropy"] * 1e3:.3f}' for cb in cols) + ' |')
    if device.type != 'cpu': return
    torch.set_flush_denormal(True)  # x86 with SSE3: subnormal results become 0
    flush = {cb: bench(*cb, device, a.rounds, a.iters, only=('F.cross_entropy', 'LDAM (randn logits)')) for cb in cols}
    torch.set_flush_denormal(False)
    print('| LDAM (randn logits), flush_denormal | ' +
          ' | '.join(f'{flush[cb]["LDAM (randn logits)"] / flush[cb]["F.cross_entropy"]:.2f}x' for cb in cols) + ' |')
    print("\nLDAM is timed on a cosine head's logits (|z| <= 1, scaled by s = 30). On standard normal logits s * z reaches "
          "-100 and below, exp() returns subnormal floats, and x86 CPUs process those very slowly: the 'randn logits' row. "
          "torch.set_flush_denormal(True) rounds them to 0: the 'flush_denormal' row (ratios against F.cross_entropy with "
          "the same setting).")


if __name__ == '__main__': main()
