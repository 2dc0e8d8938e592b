#!/usr/bin/env python
"""Structure statistics of the package and its notebooks, printed as Markdown tables.

Measured the same way before and after a refactoring:
- lines per module: `wc -l` of each `swrm_fastai/*.py` (generated `_modidx.py` left out);
- names exported: the size of each module's `__all__`, and the names of `swrm_fastai.all` that are not fastai's;
- exported-cell length: lines of source of each `#| export`/`#| exporti` cell of `nbs/`, directive lines left out; median;
- tests: a code cell is a *test cell* if it calls `test_eq`/`test_close`/`test_fail`/`test_ne`/`test_is`/`test_warns`
  or has an `assert` statement; it is *hidden* if it carries `#| hide`, *visible* otherwise.
  Test calls count each such call or `assert` line.
- summary (`--summary`, one table to compare two commits): exported cells' median/p90 length, how many exceed 50 lines,
  the share defining more than one top-level name, hidden test cells over 20 lines, bytes of `nbs/*.ipynb`, README
  lines and words, numeric literals other than 0, 1 and 2 per 1,000 package lines (generated `_modidx.py` left out).
"""
import ast, io, json, re, statistics, sys, importlib, tokenize
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

def n_defs(s):
    "Top-level definitions (functions, classes, assignments to a public or private name) in cell source `s`"
    try: tree = ast.parse('\n'.join(l for l in s.splitlines() if not l.lstrip().startswith(('#|', '%', '!'))))
    except SyntaxError: return 0
    return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)

def p90(xs): return sorted(xs)[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]

def literal_rate():
    "Numeric literals per 1,000 lines of the package"
    n = lines = 0
    for p in (ROOT/'swrm_fastai').glob('*.py'):
        if p.name == '_modidx.py': continue
        t = p.read_text(); lines += len(t.splitlines())
        n += sum(tok.type == tokenize.NUMBER and float(eval(tok.string).real) not in (0., 1., 2.)
                 for tok in tokenize.generate_tokens(io.StringIO(t).readline))
    return 1000 * n / lines, lines

def summary():
    lens, multi, big_hidden = [], 0, 0
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in cells(nb):
            s = src(c)
            if is_export(s):
                lens.append(len([l for l in s.splitlines() if not l.strip().startswith('#|') and l.strip()]))
                multi += n_defs(s) > 1
            elif is_hidden(s) and TEST_RE.search(s) and len(s.splitlines()) > 20: big_hidden += 1
    rows, _ = nb_rows()
    vis, hid = sum(r[5] for r in rows), sum(r[6] for r in rows)
    rate, lines = literal_rate()
    readme = (ROOT/'README.md').read_text()
    nb_bytes = sum(p.stat().st_size for p in (ROOT/'nbs').glob('*.ipynb'))
    mods = {r[0]: r[1] for r in module_rows()}
    return {'package lines (without _modidx)': lines, 'largest module': max(mods.items(), key=lambda kv: kv[1]),
            'exported cells': len(lens), 'median lines': statistics.median(lens), 'p90 lines': p90(lens),
            'cells over 50 lines': sum(l > 50 for l in lens), 'multi-definition share': f'{multi/len(lens):.0%}',
            'visible / hidden test calls': f'{vis} / {hid}', 'hidden test cells over 20 lines': big_hidden,
            'nbs/*.ipynb bytes': nb_bytes, 'README lines / words': f'{len(readme.splitlines())} / {len(readme.split())}',
            'numeric literals (not 0/1/2) per 1,000 lines': round(rate)}

if __name__ == '__main__' and '--summary' in sys.argv:
    print('| measure | value |\n|---|---:|')
    for k, v in summary().items(): print(f'| {k} | {v} |')
    sys.exit(0)

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
