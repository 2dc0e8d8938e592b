"""Write README.md from nbs/index.ipynb (nbdev's `nbdev-readme` needs Quarto, which cannot be installed offline).

Markdown cells are copied as they are, code cells become ```python blocks, and their text outputs follow as plain
``` blocks. Hidden cells (`#| hide`) are left out. Run: python scripts/make_readme.py [--check]
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def cell_md(cell):
    src = ''.join(cell['source']).rstrip()
    if cell['cell_type'] == 'markdown': return src
    if cell['cell_type'] != 'code' or src.startswith('#| hide') or '\n#| hide' in src: return ''
    src = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
    parts = [f"```python\n{src}\n```"] if src else []
    for out in cell.get('outputs', []):
        text = out.get('text') or out.get('data', {}).get('text/plain')
        if text: parts.append("```\n" + ''.join(text).rstrip() + "\n```")
    return '\n\n'.join(parts)

def readme():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    body = '\n\n'.join(s for s in map(cell_md, nb['cells']) if s)
    return "<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file -->\n\n" + body + '\n'

if __name__ == '__main__':
    new, path = readme(), root/'README.md'
    if '--check' in sys.argv:
        if not path.exists() or path.read_text() != new:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python scripts/make_readme.py`")
    else: path.write_text(new)
