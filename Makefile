# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
# Fonts of Glyphs-LT (swrm_fastai.data.GLYPH_FONTS): training families, then test families
GLYPH_FONTS := fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-urw-base35 \
  fonts-crosextra-carlito fonts-crosextra-caladea fonts-open-sans fonts-inconsolata
# Fonts of CJK-LT and CJK-LT-ft (swrm_fastai.data.CJK_FONTS): training families, then test families
CJK_FONTS := fonts-noto-cjk fonts-ipafont-gothic fonts-ipafont-mincho fonts-ipaexfont-gothic fonts-ipaexfont-mincho \
  fonts-arphic-ukai fonts-arphic-uming fonts-hanazono fonts-vlgothic fonts-horai-umefont \
  fonts-wqy-zenhei fonts-wqy-microhei fonts-klee fonts-lxgw-wenkai fonts-morisawa-bizud-gothic fonts-morisawa-bizud-mincho
export PYTHONHASHSEED := 0

.PHONY: demo test venv data data-fmnist data-fonts results nbtest pytest export clean-nbs check-sync docs-check readme bench-speed bench-cost slow-tests

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST and the fonts of Glyphs-LT and CJK-LT from Debian, so nothing is downloaded (needs root; skipped quietly otherwise).
# `make demo` needs Fashion-MNIST only; the tests need both.
data: data-fmnist data-fonts

data-fmnist:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	    echo "warning: could not apt-get install dataset-fashion-mnist"; \
	  else echo "note: $(FMNIST) missing and not root; set SWRM_DATA or let torchvision download"; fi; \
	fi

data-fonts:
	@if ! dpkg -s $(GLYPH_FONTS) $(CJK_FONTS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q $(GLYPH_FONTS) $(CJK_FONTS) >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(GLYPH_FONTS) $(CJK_FONTS) >/dev/null 2>&1) || \
	    echo "warning: could not apt-get install the Glyphs-LT and CJK-LT fonts ($(GLYPH_FONTS) $(CJK_FONTS))"; \
	  else echo "note: fonts missing and not root; sudo apt-get install $(GLYPH_FONTS) $(CJK_FONTS)"; fi; \
	fi

demo: venv data-fmnist
	$(BIN)/swrm-bench --quick

nbtest: venv data
	# two notebooks at a time on the two cores, one torch thread each (two each would spin against each other)
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2

pytest: venv data
	$(BIN)/pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

test: nbtest pytest

export: venv
	$(BIN)/nbdev-export

clean-nbs: venv
	$(BIN)/nbdev-clean

# CI: the package must equal what the notebooks export, notebooks must be clean, their stored outputs must come from
# their cells' current sources (scripts/run_nbs.py stores them), and every published table must equal its results files.
check-sync: venv
	$(BIN)/nbdev-export
	@git diff --exit-code --stat -- swrm_fastai || (echo "swrm_fastai/ is out of sync with nbs/: run nbdev-export and commit"; exit 1)
	@test -z "$$(git status --porcelain -- swrm_fastai)" || (echo "nbdev-export created untracked files:"; git status --porcelain -- swrm_fastai; exit 1)
	$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- nbs || (echo "notebooks are not clean: run nbdev-clean and commit"; exit 1)
	$(BIN)/python scripts/check_outputs.py
	$(BIN)/python scripts/make_results.py --check
	$(BIN)/python scripts/make_readme.py --check

# CI: nbdev's docs step (what `nbdev-preview`/`nbdev-docs` run before Quarto) must process every notebook.
# It executes the exported cells, the import cells and `show_doc` cells of each notebook (so imports stay in cells of
# their own) and writes the processed copies to _proc/ (git-ignored). Quarto itself is not needed for this step.
docs-check: venv
	$(BIN)/nbdev-proc-nbs --n-workers 0
	@git diff --exit-code --stat -- nbs/nbdev.yml nbs/_quarto.yml || (echo "nbs/nbdev.yml or nbs/_quarto.yml changed: commit them"; exit 1)

# Every published table is generated from the committed results folders under benchmarks/results/ (then the README).
results: venv
	$(BIN)/python scripts/make_results.py
	$(BIN)/python scripts/make_readme.py

# README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which is not available offline).
readme: venv
	$(BIN)/python scripts/make_readme.py

bench-speed: venv
	$(BIN)/python benchmarks/loss_speed.py

# What the window costs at 1,000 classes: epoch time after the switch, the switch, peak memory, each against CE
bench-cost: venv data
	$(BIN)/python benchmarks/fit_cost.py --dataset cjk-lt

slow-tests: venv data
	$(BIN)/nbdev-test --n-workers 1 --flags slow
	$(BIN)/pytest -q -m slow tests
