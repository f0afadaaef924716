# conntool developer targets; everything runs from the .venv at the repo root.
VENV := .venv
PY := $(VENV)/bin/python
CONNTOOL := $(VENV)/bin/conntool

.PHONY: install test test-fast demo bench bench-fmri bench-cohort bench-registration bench-scale clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: install  ## all tests, end-to-end (marked slow) included
	$(VENV)/bin/pytest -q

test-fast: install  ## unit and workflow-graph tests only (seconds)
	$(VENV)/bin/pytest -q -m "not slow"

demo: install  ## simulate a subject and run the fMRI path on it; all under demo/
	$(CONNTOOL) simulate demo/bids --subjects 1 --seed 0 --overwrite
	$(CONNTOOL) fmri demo/bids demo/out --participant-label 01 --atlas Sim100 \
		--atlas-dir demo/bids/derivatives/simulation --atlas Power264 \
		--pipeline fmri-default --work-dir demo/work --nprocs 2 --overwrite

bench: install  ## fMRI and dMRI paths: wall time and peak memory per stage; dMRI vs MRtrix3 (needs mrtrix3)
	$(PY) bench/bench_fmri.py bench/out
	$(PY) bench/bench_dmri.py bench/out
	$(PY) bench/bench_cohort.py bench/out

bench-fmri: install
	$(PY) bench/bench_fmri.py bench/out

bench-cohort: install  ## connectome tail over 100 simulated fMRIPrep participants vs a plain nilearn script
	$(PY) bench/bench_cohort.py bench/out

bench-scale: install  ## fMRI and dMRI paths on an hcp-sized simulated participant: per-node wall, CPU, memory
	$(PY) bench/bench_scale.py bench/out --profile hcp

bench-registration: install  ## ANTs vs DIPY T1w->template: accuracy and time
	$(PY) bench/bench_registration.py bench/out

clean:
	rm -rf demo bench/out
