"""Execute notebooks in place and store their outputs (then `nbdev-clean` them): `python scripts/run_nbs.py nbs/04_callback.ipynb ...`

With `--slow`, the cells marked `#| slow` run too (and store their outputs); without it they are skipped and keep the
outputs they have, as `nbdev-test` skips them.

Each code cell with outputs records a hash of its source in its metadata (`swrm.src`), which `scripts/check_outputs.py` checks.

Runs each notebook in its own process from `nbs/` with one torch thread, the torch.jit deprecation warning that importing fastai
triggers silenced, progress bars removed from the stored text (the epoch tables stay), and stops at the first error (the
notebook is then left unchanged)."""
import os, subprocess, sys, time
from pathlib import Path

RUN = r'''
import sys, warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
from execnb.shell import CaptureShell
from fastcore.nbio import read_nb, write_nb
import re
SKIP = re.compile(r'^#\|\s*(' + ('' if sys.argv[2:] == ['--slow'] else 'slow|') + r'cuda|eval:\s*false)\s*$', re.M)  # what nbdev-test skips without --flags
def skip(cell): return cell.cell_type != 'code' or bool(SKIP.search(cell.source))
import hashlib
def stamp(cell):
    "Record which source produced the stored outputs (scripts/check_outputs.py compares it)"
    if cell.cell_type == 'code' and cell.get('outputs'):
        cell.metadata['swrm'] = {'src': hashlib.sha1(cell.source.encode()).hexdigest()[:12]}
    else: cell.metadata.pop('swrm', None)
BAR = re.compile(r'\|[\u2588-]*\|\s*\d+\.\d+% \[')  # a fastprogress console bar
def unbar(text):
    "What a terminal would show of `text` once the progress bars are gone: each line after its last carriage return"
    out = []
    for line in text.split('\n'):
        seg = line.split('\r')[-1].rstrip() if '\r' in line else line
        if '\r' in line and (not seg.strip() or BAR.search(seg) or seg.strip() == '\u2588'): continue
        out.append(seg.replace('\u2588', '') if '\r' in line else seg)
    return '\n'.join(out)
def clean(cell):
    "Progress bars are noise in a stored output: drop them, keep the epoch table and everything printed"
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream':
            o['text'] = unbar(''.join(o['text']) if isinstance(o['text'], list) else o['text'])
    cell['outputs'] = [o for o in cell.get('outputs', []) if not (o.get('output_type') == 'stream' and not o['text'].strip())]
nb = read_nb(sys.argv[1])
CaptureShell(path='.').run_all(nb, exc_stop=True, preproc=skip)
for c in nb.cells:
    if c.cell_type == 'code': clean(c)
    stamp(c)
write_nb(nb, sys.argv[1])
'''

def main(paths, slow=False):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}
    for p in paths:
        p = Path(p).resolve(); t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-c', RUN, str(p)] + ['--slow'] * slow, cwd=root/'nbs', env=env)
        if r.returncode: sys.exit(f"run_nbs: {p.name} failed")
        print(f"{p.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    subprocess.run([str(Path(sys.executable).parent/'nbdev-clean')], cwd=root, check=True)

if __name__ == '__main__': main([a for a in sys.argv[1:] if a != '--slow'], slow='--slow' in sys.argv[1:])
