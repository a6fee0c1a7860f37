# The two commands: `make test` (everything CI checks) and `make demo` (the functions against a
# local EC2 emulator). Each installs what it needs into .venv and fails with a clear message when
# it can't.

SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum requirements-dev.txt | cut -c1-12)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test demo tools fmt-check clippy cargo-test lint-template bench

test: tools fmt-check clippy cargo-test lint-template
	@echo "make test: all checks passed"

demo: tools
	@bash demo/run.sh

tools: $(STAMP)

$(STAMP): requirements-dev.txt
	@command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs), then run make again" >&2; exit 1; }
	@command -v python3 >/dev/null || { echo "error: python3 not found: install Python 3.9+ with venv (e.g. apt-get install python3 python3-venv)" >&2; exit 1; }
	@test -x $(VENV)/bin/pip || python3 -m venv $(VENV) || { echo "error: could not create $(VENV): install python3-venv" >&2; exit 1; }
	@echo "installing pinned Python tools into $(VENV) (moto, cfn-lint, cargo-lambda)"
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt || { echo "error: pip could not install requirements-dev.txt (is PyPI reachable?)" >&2; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

cargo-test: tools
	cargo test --workspace --locked

lint-template: tools
	cfn-lint template.yaml
