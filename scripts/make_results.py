"""Published tables, generated from the committed results folders under `benchmarks/results/`.

A table lives in a markdown cell of a notebook (`nbs/index.ipynb` gives the README) between two comments:

    <!-- results: fmnist-lt, fmnist-lt-ldam-drw | methods=ce,cb,ldam-drw -->
    ...generated: the table, then the line naming its run folders...
    <!-- /results -->

The comment names one or more run folders (relative to `benchmarks/results/`, each with the `runs.csv` and
`config.json` that `swrm-bench` writes) and, after `|`, options: `methods=` (which methods, in which order; default:
every method of the folders, in their order), `digits=` (default 2). The rows of the folders are pooled (a method in
two folders must not repeat a seed) and summarised as `swrm-bench` does (mean ± std over seeds, overall and
many/medium/few). A number that is not in a committed file cannot be published this way.

    python scripts/make_results.py           # rewrite every block of the notebooks below (then run make_readme.py)
    python scripts/make_results.py --check   # CI: exit 1 naming each block that differs from what its files give
"""
import json, re, sys
from pathlib import Path
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'
NOTEBOOKS = [ROOT/'nbs'/'index.ipynb'] + sorted((ROOT/'nbs').glob('*results*.ipynb'))
BLOCK = re.compile(r'(<!-- results(?P<kind>|-summary|-file): (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /results -->)', re.S)
BASELINES = ('focal', 'cb', 'ldam-drw', 'la', 'bs')  # the summary's "best baseline" is the best of these

class ResultsError(ValueError): pass

def parse_spec(spec:str) -> tuple[list, dict]:
    "'a, b | methods=x,y digits=1' -> (['a', 'b'], {'methods': ['x', 'y'], 'digits': 1})"
    runs, _, opts = spec.partition('|')
    folders = [r.strip() for r in runs.split(',') if r.strip()]
    out = {}
    for o in opts.split():
        k, eq, v = o.partition('=')
        if not eq or k not in ('methods', 'digits'): raise ResultsError(f"bad option {o!r} in <!-- results: {spec} -->")
        out[k] = [m for m in v.split(',') if m] if k == 'methods' else int(v)
    if not folders: raise ResultsError(f"no run folder in <!-- results: {spec} -->")
    return folders, out

def load_runs(folders:list) -> tuple[pd.DataFrame, list]:
    "The pooled rows of the run folders, and each folder's configuration with the source commits of its rows"
    rows, confs = [], []
    for f in folders:
        d = RESULTS/f
        if not (d/'runs.csv').exists(): raise ResultsError(f"benchmarks/results/{f}/runs.csv not found (not committed?)")
        rows.append(pd.read_csv(d/'runs.csv'))
        conf = json.loads((d/'config.json').read_text()) if (d/'config.json').exists() else {}
        t = rows[-1].get('train_time_s', pd.Series(dtype=float)).dropna()
        confs.append(dict(conf, row_commits=sorted({str(x) for x in rows[-1].get('commit', pd.Series(dtype=str)).dropna()}),
                          n_runs=len(rows[-1]), run_minutes=t.mean() / 60 if len(t) else None))
    from swrm_fastai.report import run_keys
    runs = pd.concat(rows, ignore_index=True)
    dup = runs[runs.duplicated(run_keys(runs) + ['seed'], keep=False)]
    if len(dup): raise ResultsError(f"{', '.join(folders)}: {dup.method.iloc[0]} seed {dup.seed.iloc[0]}"
                                    + (f" at {dup.param.iloc[0]}={dup.value.iloc[0]:g}" if 'param' in dup else '') + " appears twice")
    return runs, confs

def table(spec:str) -> str:
    "The markdown of one block: the score table, then the folders with their commands, commits and machines"
    from swrm_fastai.report import summarise, score_table, markdown_table, run_keys
    from swrm_fastai.bench import METHODS
    folders, opts = parse_spec(spec)
    runs, confs = load_runs(folders)
    keys = run_keys(runs)
    if 'methods' in opts:
        missing = [m for m in opts['methods'] if m not in set(runs.method)]
        if missing: raise ResultsError(f"{', '.join(folders)}: no runs of {', '.join(missing)}")
        runs = runs[runs.method.isin(opts['methods'])]
        order = runs.method.map({m: i for i, m in enumerate(opts['methods'])})
        runs = runs.assign(_o=order).sort_values(keys[:-1] + ['_o'], kind='stable')  # a sweep stays in value order
    labels = {k: v[0] for k, v in METHODS.items()}
    t = markdown_table(score_table(summarise(runs, keys), keys, digits=opts.get('digits', 2), labels=labels))
    return t + '\n' + _sources(folders, confs)

def _sources(folders, confs) -> str:
    "The line naming the run folders, with the command, the number of runs and their mean training time, commits and CPU"
    src = []
    for f, c in zip(folders, confs):
        commits = sorted({x[:7] + ('+dirty' if x.endswith('+dirty') else '') for x in c['row_commits']})
        cpu, mins = (c.get('versions') or {}).get('cpu'), c.get('run_minutes')
        src.append(f"`benchmarks/results/{f}` (`{c.get('command', '?')}`"
                   + (f"; {c['n_runs']} runs, training {mins:.1f} min a run" if mins is not None else '')
                   + (f"; commit {', '.join(commits)}" if commits else '') + (f"; {cpu}" if cpu else '') + ')')
    return 'Run folder' + ('s' if len(src) > 1 else '') + ': ' + '; '.join(src) + '.\n'

def summary(spec:str) -> str:
    "One row per data set: CE, the best baseline, SWRM, DySWRM and the best of every method run there (mean ± std over seeds)"
    from swrm_fastai.report import summarise, fmt_score, markdown_table
    from swrm_fastai.bench import METHODS
    pairs = [p.split('=', 1) for p in spec.split(';') if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs): raise ResultsError(f"bad <!-- results-summary: {spec} -->: FOLDER[+FOLDER]=LABEL; ...")
    rows, folders, confs = [], [], []
    for f, label in pairs:
        fs = [x.strip() for x in f.split('+')]; runs, c = load_runs(fs); folders += fs; confs += c
        s = summarise(runs).set_index('method')
        cell = lambda m: fmt_score(s.loc[m, 'overall_mean'], s.loc[m, 'overall_std']) if m in s.index else '–'
        name = lambda m: f"{METHODS[m][0] if m in METHODS else m}: {cell(m)}"
        base = [m for m in BASELINES if m in s.index]
        best = max(base, key=lambda m: s.loc[m, 'overall_mean']) if base else None
        rows.append({'data': label.strip(), 'CE': cell('ce'), 'best baseline': name(best) if best else '–',
                     'SWRM': cell('swrm'), 'DySWRM': cell('dyswrm'),
                     'best of every method run': f"{name(s.overall_mean.idxmax())} (of {len(s)})"})
    return markdown_table(pd.DataFrame(rows)) + '\n' + _sources(folders, confs)

def include(spec:str) -> str:
    "A committed file under benchmarks/results, as it is (e.g. the loss-speed table the script printed)"
    f = RESULTS/spec.strip()
    if not f.is_file(): raise ResultsError(f"benchmarks/results/{spec.strip()} not found (not committed?)")
    text = f.read_text().strip('\n')
    if text.startswith('# '): text = text.split('\n', 1)[1].strip('\n')  # a results file's own title: the notebook has its heading
    return text + f"\n\nFile: `benchmarks/results/{spec.strip()}`.\n"

def render(text:str) -> str:
    "`text` with every results block regenerated"
    make = {'': table, '-summary': summary, '-file': include}
    return BLOCK.sub(lambda m: m[1] + make[m['kind']](m['spec']) + m[5], text)

def process(nb_path:Path, write:bool) -> list:
    "Regenerate the blocks of a notebook's markdown cells; the specs of the blocks that differ"
    nb = json.loads(nb_path.read_text())
    stale = []
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        src = ''.join(c['source'])
        if '<!-- results' not in src: continue
        new = render(src)
        if new != src:
            stale += [m['kind'] + ': ' + m['spec'] for m, n in zip(BLOCK.finditer(src), BLOCK.finditer(new)) if m[0] != n[0]]
            lines = new.split('\n'); c['source'] = [l + '\n' for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    if write and stale: nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return stale

def main(argv):
    check = '--check' in argv
    try: stale = {p: process(p, write=not check) for p in NOTEBOOKS}
    except ResultsError as e: sys.exit(f"make_results: {e}")
    bad = [f"{p.relative_to(ROOT)}: <!-- results{s} -->" for p, ss in stale.items() for s in ss]
    if check and bad:
        sys.exit("tables differ from their committed results files (run `python scripts/make_results.py`):\n  " + '\n  '.join(bad))
    for b in bad: print(f"updated {b}")

if __name__ == '__main__': main(sys.argv[1:])
