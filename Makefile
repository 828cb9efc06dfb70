# `make demo` and `make test` set everything up on a fresh machine; re-running them reuses .venv.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
TUBELET := $(VENV)/bin/tubelet
STAMP   := $(VENV)/.installed
DEMO    := runs/demo

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The main job: the per-frame baseline against two temporal models on the built-in dataset.
demo: $(STAMP)
	$(TUBELET) train --model frame2d_resnet18 --model-arg width=16 --frames 8 --size 64 \
		--epochs 8 --batch-size 16 --lr 2e-3 --out $(DEMO)/frame2d_resnet18
	$(TUBELET) train --model r2plus1d_18 --model-arg width=16 --frames 8 --size 64 \
		--epochs 8 --batch-size 16 --lr 2e-3 --out $(DEMO)/r2plus1d_18
	$(TUBELET) train --model slowfast_r50 --model-arg width=16 --frames 8 --size 64 \
		--epochs 8 --batch-size 16 --lr 2e-3 --out $(DEMO)/slowfast_r50
	$(TUBELET) compare $(DEMO)/frame2d_resnet18 $(DEMO)/r2plus1d_18 $(DEMO)/slowfast_r50

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PYTHON) -m pytest -n 2

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache
