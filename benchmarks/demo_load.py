"""How `swrm-bench --quick` (what `make demo` runs) copes with a busy machine.

Runs the quick benchmark alone, then beside one CPU-bound process (a Python busy loop on one core), with the
package's default thread choice, and prints both times and their ratio (target: at most 1.5x). With `--baseline`,
also runs it beside the busy process with a fixed thread count (torch's old default: one thread per core), which is
what a process that ignores the load does.

    python benchmarks/demo_load.py              # default threads, alone and busy
    python benchmarks/demo_load.py --baseline   # + `--threads <cores>` beside the busy process
"""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path

def busy_loop() -> subprocess.Popen:
    "A process that keeps one core busy until killed"
    return subprocess.Popen([sys.executable, '-c', 'while True: pass'])

def quick_run(extra=(), timeout=1800) -> float:
    "Wall seconds of `swrm-bench --quick` (run as `python -m swrm_fastai.bench`), output discarded"
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, '-m', 'swrm_fastai.bench', '--quick', '--no-bar', '--out', str(Path(d)/'res'), *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        dt = time.perf_counter() - t0
    if p.returncode != 0: sys.exit(f"demo_load: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return dt

def beside_busy(extra=(), timeout=1800) -> float:
    bp = busy_loop()
    try:
        time.sleep(1.)  # let the busy loop show in the load the run measures
        return quick_run(extra, timeout)
    finally: bp.kill(); bp.wait()

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--baseline', action='store_true', help="also run beside the busy process with --threads <cores>")
    ap.add_argument('--timeout', type=float, default=1800, help="seconds before a run is given up (default 1800)")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    print(f"swrm-bench --quick on {cores} cores (default threads: one per free core, checked before each run)", flush=True)
    alone = quick_run(timeout=a.timeout); print(f"alone:                      {alone:6.1f} s", flush=True)
    busy = beside_busy(timeout=a.timeout); print(f"beside a CPU-bound process: {busy:6.1f} s", flush=True)
    print(f"ratio busy / alone: {busy / alone:.2f}x (target: at most 1.50x)")
    if a.baseline:
        try:
            fixed = beside_busy(['--threads', str(cores)], a.timeout)
            print(f"baseline, --threads {cores} beside the busy process: {fixed:6.1f} s = {fixed / alone:.1f}x alone, "
                  f"{fixed / busy:.1f}x the default")
        except subprocess.TimeoutExpired: print(f"baseline, --threads {cores} beside the busy process: over {a.timeout:.0f} s")

if __name__ == '__main__': main()
