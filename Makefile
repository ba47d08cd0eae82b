# Two commands do all set-up and work:  make reproduce   and   make test
# Both create/refresh the local virtualenv (.venv) from the pinned requirements on first use.
PYTHON  ?= python3
VENV    ?= .venv
# paths may contain spaces (a clone in "my projects/"): no $(abspath) (it splits words), every
# path quoted in recipes
VENV_DIR := $(if $(filter /%,$(firstword $(VENV))),$(VENV),$(CURDIR)/$(VENV))
PY      := $(VENV_DIR)/bin/python
NB      ?=
PROFILE ?=
PARAMS  ?=
# FORCE=1: replace a published result even of a higher-ranked profile (smoke < cpu < full)
FORCE   ?=
# nbval: a smoke cell takes seconds; one that runs longer than this is stuck (fails, named)
CELL_TIMEOUT ?= 300
export PATH := $(VENV_DIR)/bin:$(PATH)
# Every process and kernel imports this clone's `common` (first on PYTHONPATH) and refuses
# another one (common/__init__.py), even from an environment shared with other clones.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export REPRO_EXPECT_ROOT := $(CURDIR)

.PHONY: reproduce test unit nbval venv report bench cost dryrun clean-scratch help

help:
	@echo "make reproduce [NB=04] [PROFILE=smoke|cpu|full] [PARAMS='NAME=VALUE ...'] [FORCE=1]"
	@echo "                                                  run notebooks into results/ (fails: make"
	@echo "                                                  exits 2, its last line names the run's exit)"
	@echo "make test                                         unit tests + nbval (smoke profile)"
	@echo "make report                                       regenerate the README results table"
	@echo "make bench                                        every notebook's main model: images/s in"
	@echo "                                                  float32 and bf16 on this machine"
	@echo "make cost                                         FLOPs of the full profile -> docs/COST.md"
	@echo "make dryrun [NB=05]                               every notebook's full profile, a few steps,"
	@echo "                                                  into a temporary folder (never results/)"

ifeq ($(VENV),.venv)
# the project's own environment: pinned requirements + this clone's `common`, editable
$(VENV)/.installed: requirements.txt requirements-lock.txt pyproject.toml
	test -x "$(PY)" || $(PYTHON) -m venv "$(VENV_DIR)"
	"$(PY)" -m pip install --disable-pip-version-check -r requirements.txt -c requirements-lock.txt
	"$(PY)" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || "$(PY)" -m pip install --disable-pip-version-check --no-deps -e .
	touch "$@"

venv: $(VENV)/.installed
else
# an environment of your own (VENV=$$CONDA_PREFIX ...): used as it is, never modified; this
# clone's code comes from PYTHONPATH, so other clones sharing it are not re-pointed
venv:
	@"$(PY)" -c "import torch, torchvision, papermill, nbval, nbconvert, sklearn, seaborn, tqdm" \
	  || { echo "VENV=$(VENV) lacks packages of requirements.txt: pip install -r requirements.txt there"; exit 1; }
endif

# make's own exit status is 2 whatever failed: the last line names common.reproduce's (1 failed,
# 2 refused before any notebook ran, 3 unfinished: run again to resume, 143 terminated)
reproduce: venv
	"$(PY)" -m common.reproduce $(if $(NB),--nb '$(NB)') $(if $(PROFILE),--profile '$(PROFILE)') \
	  $(if $(filter 1 yes true,$(FORCE)),--force) $(foreach p,$(PARAMS),--param '$(p)') \
	  || { rc=$$?; case $$rc in 2) why="refused before any notebook ran";; \
	       3) why="unfinished: run the same command again to resume";; \
	       143) why="terminated";; *) why="failed";; esac; \
	       echo "make reproduce: common.reproduce exited $$rc ($$why)" >&2; exit $$rc; }

unit: venv
	"$(PY)" -m pytest -p no:cacheprovider tests

# nbval: every notebook in the smoke profile, outputs compared only in cells marked
# NBVAL_CHECK_OUTPUT; outputs go to a throw-away folder, never into results/.
# tools/nbval_guard: a dead kernel fails its cell within seconds; relative data paths resolved.
nbval: venv
	scratch=$$(mktemp -d) && REPRO_PROFILE=smoke REPRO_OUT="$$scratch" \
	  "$(PY)" -m pytest -p no:cacheprovider -p tools.nbval_guard --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=$(CELL_TIMEOUT) --durations=5 notebooks; \
	  rc=$$?; rm -rf "$$scratch"; exit $$rc

test: unit nbval

report: venv
	"$(PY)" -m common.report

# every notebook's main model at its cpu profile's shapes: images/s in float32 and with bf16
# autocast (+ channels_last for conv nets), paired rounds, the CPU model and vector units, and
# which mode each notebook's profile uses here (common/bench.py). M2's stacked runs and
# torch.compile: python -m common.kingma bench --runs 1 3 --variants eager bf16 compile
bench: venv
	"$(PY)" -m common.bench

# FLOPs per step x steps of every notebook's full profile, and an H100 estimate (docs/COST.md)
cost: venv
	"$(PY)" -m common.cost --measure

# every notebook's full code path (full models, batches, data; a handful of steps per model, small
# evaluation subsets) through papermill into a temporary folder, never results/ or checkpoints/;
# 02 runs in two time segments (stop + resume). Per-notebook pass/fail and seconds; exit 1 on a failure.
dryrun: venv
	"$(PY)" -m common.dryrun $(if $(NB),--nb $(NB))

clean-scratch:
	rm -rf results/scratch results/.staging-* results/*.failed
