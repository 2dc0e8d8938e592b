"""What the similarity window costs in a real fit: the switch, the epoch time after it, and the fit's peak memory.

Each method of `--methods` trains `--epochs` epochs of a `swrm-bench` data set's recipe (its model, batch size, learning
rate; the two-stage methods switch at `--switch` of the fit), in a fresh process of its own, `--repeats` times, the
methods interleaved (ce, swrm, dyswrm, ce, swrm, dyswrm, ...) so that a change of load on the machine falls on all of
them alike. Printed per method (medians over the repeats):

- `epoch_s`: CPU seconds of the process for a training epoch *after* the switch (the epochs where SWRM/DySWRM differ
  from CE), and its ratio to CE's same epochs (the wall-clock ratio beside it; on a GPU read the wall clock);
- `switch_s`: SWRM's switch (prototype pass over the training set + 1-D t-SNE + window), also in training epochs;
- `peak_mb`: the fit's peak memory above what the process held before it (CPU: the peak resident set size, reset
  after the data are loaded (`/proc/self/clear_refs`, VmHWM); CUDA: `torch.cuda.max_memory_allocated`), and its ratio to CE's.

    python benchmarks/fit_cost.py --dataset cjk-lt                       # 1,000 classes, CPU, 4 epochs, 3 repeats
    python benchmarks/fit_cost.py --dataset cjk-lt --device cuda
    python benchmarks/fit_cost.py --dataset cjk-lt --out benchmarks/results/cjk-lt-cost.md   # also write the table

On a CPU the epoch times are the process's CPU seconds, which other processes on the machine change much less than the
wall clock (use `--threads 1` on a shared machine); the interleaving keeps the wall-clock ratios fair when the load
is steady. `--out` also writes every fit's numbers to a `.json` beside the table.
"""
import argparse, json, resource, statistics, subprocess, sys, time
from pathlib import Path
from swrm_fastai.core import resolve_epoch


def one_fit(args) -> dict:
    "Train one method in this process; its timings and peak memory"
    import torch
    from fastai.torch_core import default_device
    from swrm_fastai.bench import bench_config, load_data, fit_method
    torch.set_num_threads(args.threads)
    if args.device: default_device(args.device != 'cpu')
    cfg = bench_config(args.dataset, methods=[args.method], seeds=[0], epochs=args.epochs, switch=args.switch, out='unused')
    dls = load_data(cfg)
    cuda = dls.device.type == 'cuda'
    rss0 = _rss_mb(); _reset_peak_rss()
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    res = fit_method(dls, args.method, 0, cfg)
    if cuda: torch.cuda.synchronize(); peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else: peak = _peak_rss_mb() - rss0
    switch_epoch = resolve_epoch(args.switch, args.epochs)  # as fit_method rounds it
    return dict(method=args.method, epoch_s=res['epoch_cpu_times'][switch_epoch:], wall_s=res['epoch_times'][switch_epoch:],
                all_epochs_cpu_s=res['epoch_cpu_times'],
                switch_s=res['switch_time'], peak_mb=peak, device=str(dls.device), n_classes=len(dls.vocab))


def _reset_peak_rss():
    "Reset the kernel's peak resident set size of this process (Linux >= 4.0: `clear_refs` 5), so that loading the data does not count"
    try: Path('/proc/self/clear_refs').write_text('5')
    except OSError: pass

def _peak_rss_mb() -> float:
    "The peak resident set size since `_reset_peak_rss` (VmHWM), in MiB; `getrusage`'s lifetime peak where /proc is missing"
    try: return next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:')) / 1024
    except (OSError, StopIteration): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def _rss_mb() -> float:
    "The resident set size of this process now, in MiB (Linux)"
    pages = int(Path('/proc/self/statm').read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='cjk-lt', help='a swrm-bench data set (default cjk-lt)')
    p.add_argument('--methods', default='ce,swrm,dyswrm', help='methods, CE first (default ce,swrm,dyswrm)')
    p.add_argument('--epochs', type=int, default=4, help='epochs of each fit (default 4)')
    p.add_argument('--switch', type=float, default=0.5, help='fraction of the fit before the switch (default 0.5)')
    p.add_argument('--repeats', type=int, default=3, help='fits of each method (default 3)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: fastai default_device())')
    p.add_argument('--out', default=None, help='also write the table (markdown) to this file')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)  # internal: run one fit, print its JSON
    args = p.parse_args(argv)
    if args.epochs < 2 or not 0 < args.switch < 1 or resolve_epoch(args.switch, args.epochs) in (0, args.epochs):
        p.error('need --epochs >= 2 and a --switch that leaves at least one epoch on each side')
    if args.one:
        args.method = args.one
        print(json.dumps(one_fit(args))); return
    methods = args.methods.split(',')
    if methods[0] != 'ce': p.error('--methods must start with ce (the ratios are to CE)')
    runs = {m: [] for m in methods}
    for r in range(args.repeats):
        for m in methods:
            cmd = [sys.executable, __file__, '--one', m] + argv_of(args)
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode: sys.exit(f"fit_cost: {m} failed:\n{out.stderr[-2000:]}")
            runs[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r+1}/{args.repeats} {m}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print(table(runs, args))
    if args.out:
        Path(args.out).write_text(table(runs, args) + '\n')
        Path(args.out).with_suffix('.json').write_text(json.dumps(runs, indent=1))


def argv_of(args) -> list:
    "The shared options, for the child processes"
    out = ['--dataset', args.dataset, '--epochs', str(args.epochs), '--switch', str(args.switch), '--threads', str(args.threads)]
    return out + (['--device', args.device] if args.device else [])


def table(runs:dict, args) -> str:
    "The markdown table of medians and ratios to CE"
    med = lambda xs: statistics.median(xs)
    ce = runs['ce']
    ce_epoch, ce_peak = med([med(r['epoch_s']) for r in ce]), med([r['peak_mb'] for r in ce])
    ce_wall = med([med(r['wall_s']) for r in ce])
    first = ce[0]
    lines = [f"# Fit cost on {args.dataset} ({first['n_classes']} classes, {first['device']}, {args.threads} thread(s)): "
             f"{args.epochs} epochs, switch after epoch {resolve_epoch(args.switch, args.epochs)}, medians of {args.repeats} fits per method",
             '', '| method | epoch after the switch (CPU s) | x CE | x CE (wall clock) | switch (s) | switch (epochs) | peak memory of the fit (MiB) | x CE |',
             '|---|---|---|---|---|---|---|---|']
    for m, rs in runs.items():
        e, w, pk = med([med(r['epoch_s']) for r in rs]), med([med(r['wall_s']) for r in rs]), med([r['peak_mb'] for r in rs])
        sw = [r['switch_s'] for r in rs if r['switch_s'] is not None]
        s = f"{med(sw):.2f} | {med(sw) / ce_wall:.2f}" if sw else '– | –'  # the switch is timed on the wall clock
        lines.append(f"| {m} | {e:.2f} | {e / ce_epoch:.3f} | {w / ce_wall:.3f} | {s} | {pk:.0f} | {pk / ce_peak:.2f} |")
    lines += ['', f"Command: `python benchmarks/fit_cost.py --dataset {args.dataset} --epochs {args.epochs} --switch {args.switch} "
                  f"--repeats {args.repeats} --threads {args.threads}" + (f" --device {args.device}" if args.device else '') + '`']
    return '\n'.join(lines)


if __name__ == '__main__': main(sys.argv[1:])
