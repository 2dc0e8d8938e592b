"""Stored notebook outputs must come from the cells' current sources and must not leak the build machine.

For every code cell of `nbs/*.ipynb` with outputs: the hash of its source recorded by `scripts/run_nbs.py` (cell
metadata `swrm.src`) must match the source (else the output is stale: the cell changed after it ran), and no text
output may hold an absolute path of a machine (`/work/`, `/home/`, `/root/`, `/tmp/`, `site-packages`), progress-bar
debris (carriage returns, bar blocks; `scripts/run_nbs.py` removes them) or a `__main__.` repr.
Run: python scripts/check_outputs.py [notebooks...]   (exit 1 listing each problem)"""
import hashlib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEAK = re.compile(r'(/work/|/home/|/root/|/tmp/|site-packages)')
DEBRIS = re.compile(r'(\r|\u2588|\d+\.\d+% \[\d+/\d+)')  # carriage returns, bar blocks, a bar's "33.33% [1/3"
MAIN = re.compile(r'__main__\.')  # a notebook-defined class's repr instead of the package's name

def output_text(o) -> str:
    t = o.get('text') or ''.join(v if isinstance(v, str) else ''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/'))
    return ''.join(t) if isinstance(t, list) else t

def problems(path:Path) -> list:
    nb, out = json.loads(path.read_text()), []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code' or not c.get('outputs'): continue
        src = ''.join(c['source'])
        rec = c.get('metadata', {}).get('swrm', {}).get('src')
        if rec != hashlib.sha1(src.encode()).hexdigest()[:12]:
            out.append(f"{path.name} cell {i}: stored output does not come from the cell's current source "
                       "(run `python scripts/run_nbs.py` on the notebook)")
        for o in c['outputs']:
            t = output_text(o)
            for rx, what in ((LEAK, 'a machine path'), (DEBRIS, 'progress-bar debris'), (MAIN, 'a `__main__` repr')):
                m = rx.search(t)
                if m: out.append(f"{path.name} cell {i}: output holds {what} ({m[0]!r})")
    return out

if __name__ == '__main__':
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT/'nbs').glob('*.ipynb'))
    bad = [p for path in paths for p in problems(path)]
    if bad: sys.exit('\n'.join(bad))
