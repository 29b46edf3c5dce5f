# Everything a fresh machine needs: `make demo` runs the main job on built-in data, `make test`
# builds everything and runs the whole suite (Rust and Python).
#
# The Python environment (PyTorch is a multi-GB download) is cached outside the clone, in
# $(CACHE_DIR), keyed by a hash of requirements/dev.txt: it is built once and reused until
# the requirements change. Override with `make VENV=/some/venv test`.

PYTHON ?= python3
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/iota-codec
REQ := requirements/dev.txt
REQ_HASH := $(shell cat $(REQ) | sha256sum | cut -c1-12)
VENV ?= $(CACHE_DIR)/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(PY)

.PHONY: all env build test test-rust test-python test-torch test-aarch64 lint fmt demo bench bench-docs speed lab fuzz dist clean

all: build

# The path is keyed by the requirements' content, so only a missing environment is built (a
# checkout that merely touches the file reuses it).
$(VENV)/.ready: | $(REQ)
	@echo "creating the Python environment in $(VENV) (first run only)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(REQ)
	touch $@
	@# Environments of earlier requirements (venv-<hash> beside this one) are stale: remove them.
	@for d in $(CACHE_DIR)/venv-????????????; do \
	  [ "$$d" = "$(VENV)" ] || [ ! -f "$$d/.ready" ] || { echo "removing stale $$d"; rm -rf "$$d"; }; \
	done

env: $(VENV)/.ready

build: env
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH maturin develop --release --quiet

lint: env
	cargo fmt --check
	cargo clippy --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches

fmt: env
	cargo fmt
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

# The pipeline's tests run once more on the scalar reference kernels (as IOTA_CODEC_SIMD
# forces them); the kernel tests compare every level with it in any case.
test-rust:
	cargo test --quiet
	IOTA_CODEC_SIMD=scalar cargo test --quiet --lib pipeline::

test-python: build
	$(PY) -m pytest tests -q

test: lint test-rust test-python

# The Python suite on another PyTorch (default: 2.4.1, the oldest the torch layer supports)
# and numpy, in an environment of its own beside the main one (a multi-GB download, once per
# pair). The extension is the one `build` puts into python/iota_codec. Not part of `test`; the
# lab's kernel link and the benchmark peers are left out (test_lab.py, test_bench.py).
# ML_DTYPES: 0.5.4, the last release that takes numpy 1.x (the tests' MX reference needs 0.5).
TORCH ?= 2.4.1
NUMPY ?= 1.26.4
ML_DTYPES ?= 0.5.4
TORCH_VENV := $(CACHE_DIR)/venv-torch-$(TORCH)-numpy-$(NUMPY)
$(TORCH_VENV)/.ready:
	rm -rf $(TORCH_VENV)
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install -q torch==$(TORCH) numpy==$(NUMPY) \
	  ml_dtypes==$(ML_DTYPES) $$(grep -E '^(pytest|hypothesis)==' $(REQ))
	touch $@

test-torch: build $(TORCH_VENV)/.ready
	PYTHONPATH=python $(TORCH_VENV)/bin/python -m pytest tests -q \
	  --ignore tests/test_lab.py --ignore tests/test_bench.py

# The Rust tests on aarch64 under user-mode emulation, so that the NEON kernels are checked
# against the scalar reference bit for bit on an x86-64 machine. Needs the Rust target and,
# on Debian/Ubuntu, `apt-get install qemu-user gcc-aarch64-linux-gnu` (not part of `test`).
AARCH64 := aarch64-unknown-linux-gnu
test-aarch64:
	rustup target list --installed | grep -qx $(AARCH64) || rustup target add $(AARCH64)
	command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null || \
	  { echo "test-aarch64 needs qemu-aarch64 and aarch64-linux-gnu-gcc (apt-get install qemu-user gcc-aarch64-linux-gnu)"; exit 1; }
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
	  cargo test --target $(AARCH64) --lib
	cargo clippy --target $(AARCH64) --all-targets -- -D warnings

demo: build
	$(PY) -m iota_codec demo

bench: build
	$(PY) -m pytest benches --benchmark-only -q

# The default `iota-codec bench`, saved where the README shows it: the full report as JSON,
# its tables as Markdown (the activation and gradient ones also go into README.md), and the
# plot. Rerun after anything that changes speed or ratio.
bench-docs: build
	$(PY) -m iota_codec bench --json docs/bench.json --markdown docs/bench.md --plot docs/bench.png
	$(PY) benches/readme.py docs/bench.json README.md activation gradient

# The speed figures of the README's "Speed" section: one core, a 64 MiB bfloat16 tensor, every
# profile against memcpy and zstd level 3 in the same run, 1 against 2 threads, break-even
# link speeds. SPEED_ARGS: e.g. `--npy acts.npy --reps 9`.
SPEED_ARGS ?=
speed:
	cargo run --release --quiet --example speed -- $(SPEED_ARGS)

# The link lab of the README (needs root and iproute2; `--fallback` in LAB_ARGS uses a paced
# socket instead). Writes docs/lab.json, docs/lab.md and docs/lab.png.
LAB_ARGS ?= --steps 1000 --seeds 2 --repeat 3 --rates 80M,20M,5M,gpu:80M --measure-seconds 15 \
  --profiles fast,balanced --bottleneck 16,8 --bottleneck-codec raw \
  --bottleneck-codec '{"name": "int4e", "bits": 4, "block": 64, "entropy": true, "grad": {"bits": 4, "block": 64, "entropy": true, "rounding": "stochastic"}}'
lab: build
	$(PY) -m iota_codec lab $(LAB_ARGS) --json docs/lab.json --markdown docs/lab.md --plot docs/lab.png

# Coverage-guided fuzzing of the decoder and of encode->decode round trips with cargo-fuzz
# (libFuzzer). FUZZ_SECONDS per target; new corpus entries go to $(FUZZ_WORK), not into the
# committed corpus: minimize with `cargo fuzz cmin` before committing any. A crash input goes
# into fuzz/regressions/<target>/, where `cargo test` replays it forever.
FUZZ_SECONDS ?= 300
FUZZ_WORK ?= $(CACHE_DIR)/fuzz-corpus
FUZZ_TARGETS := decode roundtrip lossy session
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t && \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t $(FUZZ_WORK)/$$t corpus/$$t regressions/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1) || exit 1; \
	done

# Release artifacts in dist/: the source distribution and a wheel for this machine, without
# debug information (1.6 instead of 11 MB of extension). The wheel's platform tag is this
# machine's glibc: wheels for older Linux systems are built in a manylinux container
# (maturin's own image, or `maturin build --zig`). tests/test_packaging.py builds a wheel
# from the source distribution and checks what either holds.
dist: env
	rm -rf dist
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH maturin build --release --strip --sdist --out dist

clean:
	cargo clean
	rm -f python/iota_codec/_core*.so
	rm -rf dist
