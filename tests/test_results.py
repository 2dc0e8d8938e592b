"Published tables are generated from committed results files: scripts/make_results.py fills the blocks and its check fails on an edited number"
import importlib.util, json, sys
from pathlib import Path
import pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('make_results', ROOT/'scripts'/'make_results.py')
MR = importlib.util.module_from_spec(spec); spec.loader.exec_module(MR)

def write_run(d, rows):
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(d/'runs.csv', index=False)
    (d/'config.json').write_text(json.dumps({'command': 'swrm-bench --methods ce la', 'versions': {'cpu': 'a CPU'}}))

ROWS = [dict(method='ce', seed=0, overall=80., many=90., medium=70., few=60., commit='abcdef1234'),
        dict(method='ce', seed=1, overall=82., many=91., medium=71., few=62., commit='abcdef1234'),
        dict(method='la', seed=0, overall=85., many=88., medium=80., few=75., commit='abcdef1234'),
        dict(method='la', seed=1, overall=86., many=89., medium=81., few=76., commit='abcdef1234')]

@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(MR, 'RESULTS', tmp_path/'results')
    write_run(tmp_path/'results'/'toy', ROWS)
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': [
        'Intro\n', '<!-- results: toy | methods=la,ce -->\n', 'old\n', '<!-- /results -->\n', 'after\n']}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    p = tmp_path/'nb.ipynb'; p.write_text(json.dumps(nb))
    return p

def text(p): return ''.join(json.loads(p.read_text())['cells'][0]['source'])

def test_block_is_generated_from_the_files(results):
    assert MR.process(results, write=True) == [': toy | methods=la,ce']
    t = text(results)
    assert '| LA | 85.50 ± 0.71 | 88.50 ± 0.71 | 80.50 ± 0.71 | 75.50 ± 0.71 | 2 |' in t
    assert t.index('| LA |') < t.index('| CE |') and '\nold\n' not in t and t.endswith('<!-- /results -->\nafter\n')
    assert "`benchmarks/results/toy` (`swrm-bench --methods ce la`; commit abcdef1; a CPU)" in t
    assert MR.process(results, write=False) == []  # now in sync

def test_check_fails_on_an_edited_number(results):
    MR.process(results, write=True)
    nb = json.loads(results.read_text())
    nb['cells'][0]['source'] = [s.replace('85.50', '85.60') for s in nb['cells'][0]['source']]
    results.write_text(json.dumps(nb))
    assert MR.process(results, write=False) == [': toy | methods=la,ce']

def test_summary_and_errors(results, tmp_path):
    assert 'LA: 85.50 ± 0.71' in MR.summary('toy=Toy-LT')  # best baseline
    write_run(tmp_path/'results'/'zoo', [dict(r, method='crt', overall=r['overall'] + 5) for r in ROWS[:2]])
    row = [l for l in MR.summary('toy+zoo=Toy-LT').splitlines() if l.startswith('| Toy-LT')][0]
    assert row.endswith('| LA: 85.50 ± 0.71 | – | – | cRT: 86.00 ± 1.41 (of 3) |')  # best baseline, then the best of every method
    with pytest.raises(MR.ResultsError, match='runs.csv not found'): MR.table('missing')
    with pytest.raises(MR.ResultsError, match='no runs of swrm'): MR.table('toy | methods=ce,swrm')
    write_run(tmp_path/'results'/'toy2', ROWS[:1])
    with pytest.raises(MR.ResultsError, match='ce seed 0 appears twice'): MR.table('toy, toy2')

def test_published_tables_are_in_sync():
    "The repository's own notebooks: every block equals what its committed files give (what `make check-sync` runs)"
    stale = {p.name: MR.process(p, write=False) for p in MR.NOTEBOOKS}
    assert not any(stale.values()), stale

def test_sweep_folder_gives_one_row_per_value(results, tmp_path):
    "A sweep's runs (param, value) are summarised per swept value and method, in value order; the line gives the run time"
    sweep = [dict(r, param='window', value=w, overall=r['overall'] + w, train_time_s=60. * (1 + w))
             for w in (2, 30) for r in ROWS]
    write_run(tmp_path/'results'/'sweep', sweep)
    t = MR.table('sweep | methods=la,ce')
    lines = [l for l in t.splitlines() if l.startswith('| window')]
    assert lines == ['| window | 2 | LA | 87.50 ± 0.71 | 88.50 ± 0.71 | 80.50 ± 0.71 | 75.50 ± 0.71 | 2 |',
                     '| window | 2 | CE | 83.00 ± 1.41 | 90.50 ± 0.71 | 70.50 ± 0.71 | 61.00 ± 1.41 | 2 |',
                     '| window | 30 | LA | 115.50 ± 0.71 | 88.50 ± 0.71 | 80.50 ± 0.71 | 75.50 ± 0.71 | 2 |',
                     '| window | 30 | CE | 111.00 ± 1.41 | 90.50 ± 0.71 | 70.50 ± 0.71 | 61.00 ± 1.41 | 2 |']
    assert t.splitlines()[0] == '| param | value | method | overall | many | medium | few | seeds |'
    assert '8 runs, training 17.0 min a run' in t  # (3 + 31) / 2 minutes
    write_run(tmp_path/'results'/'sweep2', sweep[:1])
    with pytest.raises(MR.ResultsError, match='ce seed 0 at window=2 appears twice'): MR.table('sweep, sweep2')
