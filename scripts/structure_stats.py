#!/usr/bin/env python
"""Structure statistics of the package and its notebooks, printed as Markdown tables.

Measured the same way before and after a refactoring:
- lines per module: `wc -l` of each `swrm_fastai/*.py` (generated `_modidx.py` left out);
- names exported: the size of each module's `__all__`, and the names of `swrm_fastai.all` that are not fastai's;
- exported-cell length: lines of source of each `#| export`/`#| exporti` cell of `nbs/`, directive lines left out; median;
- tests: a code cell is a *test cell* if it calls `test_eq`/`test_close`/`test_fail`/`test_ne`/`test_is`/`test_warns`
  or has an `assert` statement; it is *hidden* if it carries `#| hide`, *visible* otherwise.
  Test calls count each such call or `assert` line.
"""
import json, re, statistics, sys, importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_RE = re.compile(r'\b(test_eq|test_close|test_fail|test_ne|test_is|test_warns|test_eq_type|test_shuffled)\s*\(|^\s*assert\b', re.M)

def cells(nb): return [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
def src(c): return ''.join(c['source'])
def directives(s): return [l.strip() for l in s.splitlines() if l.strip().startswith('#|')]
def is_export(s): return any(re.match(r'#\|\s*export(i)?\b', d) for d in directives(s))
def is_hidden(s): return any(re.match(r'#\|\s*hide\b', d) for d in directives(s))

def module_rows():
    sys.path.insert(0, str(ROOT))
    rows = []
    for p in sorted((ROOT/'swrm_fastai').glob('*.py')):
        if p.name == '_modidx.py': continue
        n = len(p.read_text().splitlines())
        m = importlib.import_module(f'swrm_fastai.{p.stem}') if p.stem != '__init__' else None
        na = len(getattr(m, '__all__', [])) if m is not None else 0
        rows.append((p.name, n, na))
    return rows

def all_names():
    "Names `swrm_fastai.all` exports from the package's own `__all__` lists, those shadowing a fastai name, and every module's clashes"
    import swrm_fastai.all as A, fastai.vision.all as F
    pkg, clashes = set(), {}
    for name, mod in sorted(sys.modules.items()):
        if name.startswith('swrm_fastai.') and hasattr(mod, '__all__'):
            pkg |= set(mod.__all__)
            c = sorted(k for k in mod.__all__ if k in dir(F))
            if c: clashes[name] = c
    # a hand-written `__all__` of `all.py` is its public API; without one, every package name a star import brings in
    exported = sorted(getattr(A, '__all__', None) or (k for k in dir(A) if k in pkg))
    return exported, sorted(k for k in exported if k in dir(F)), clashes

def nb_rows():
    rows, lens = [], []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        vis = hid = vcalls = hcalls = 0; elens = []
        for c in cells(nb):
            s = src(c)
            if is_export(s): elens.append(len([l for l in s.splitlines() if not l.strip().startswith('#|') and l.strip()]))
            k = len(TEST_RE.findall(s))
            if not k: continue
            if is_hidden(s): hid += 1; hcalls += k
            else: vis += 1; vcalls += k
        lens += elens
        rows.append((nb.name, len(elens), statistics.median(elens) if elens else 0, vis, hid, vcalls, hcalls))
    return rows, lens

if __name__ == '__main__':
    print('| module | lines | `__all__` |\n|---|---:|---:|')
    for r in module_rows(): print(f'| {r[0]} | {r[1]} | {r[2]} |')
    exported, clash, clashes = all_names()
    print(f'\n`swrm_fastai.all`: {len(exported)} names of its own; shadowing a name of fastai.vision.all: {len(clash)} {clash}')
    print(f'Any module `__all__` name also in fastai.vision.all: {clashes}')
    rows, lens = nb_rows()
    print('\n| notebook | exported cells | median lines | visible test cells | hidden test cells | visible test calls | hidden test calls |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for r in rows: print('| ' + ' | '.join(str(x) for x in r) + ' |')
    print(f'\nAll exported cells: {len(lens)}, median {statistics.median(lens)} lines, mean {statistics.mean(lens):.1f}')
    tot = [sum(r[i] for r in rows) for i in (3, 4, 5, 6)]
    print(f'Tests: visible cells {tot[0]}, hidden cells {tot[1]}; visible calls {tot[2]}, hidden calls {tot[3]}')
