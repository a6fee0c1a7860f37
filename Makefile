# The two commands: `make test` (everything CI checks) and `make demo` (the functions against a
# local EC2 emulator); and `make try` (the sweeper and the audit as dry runs against your own
# account). Each installs what it needs into .venv and fails with a clear message when it can't.

SHELL := /bin/bash
VENV := .venv
# sam and checkov pin dependencies that conflict with moto's: each gets a venv of its own.
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
stamp = $(1)/.installed-$(shell sha1sum $(2) | cut -c1-12)
STAMP := $(call stamp,$(VENV),requirements-dev.txt)
SAM_STAMP := $(call stamp,$(SAM_VENV),requirements-sam.txt)
CHECKOV_STAMP := $(call stamp,$(CHECKOV_VENV),requirements-checkov.txt)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test demo try tools template-tools fmt-check clippy cargo-test lint-template bench org-template org-upload

test: tools fmt-check clippy cargo-test lint-template
	@echo "make test: all checks passed"

demo: tools
	@bash demo/run.sh

# Dry runs only, with your credentials and region (AWS_ENDPOINT_URL honoured): nothing is changed.
# With TRY_ROLE_NAME=<role> (and AWS_REGIONS=<a,b>), in every active account of the organisation.
try: tools
	@bash demo/try.sh

# An organisation (README, Deploy): template.yaml as plain CloudFormation for a service-managed
# StackSet, in build/org-template.yaml (translated offline by .venv-sam's SAM translator; no build).
org-template: template-tools
	@$(SAM_VENV)/bin/python deploy/org_template.py

# make org-upload CODE_BUCKET_PREFIX=<prefix> REGIONS=<region,region...>: builds the functions once
# (cargo lambda, arm64 release) and puts each zip in the bucket <prefix>-<region> of every region,
# under the key build/org-template.yaml reads (AWS_ENDPOINT_URL honoured). ORG_UPLOAD_ZIPS_DIR=<dir>
# uploads <dir>/<function>/bootstrap.zip instead of building (the tests use it).
org-upload: tools org-template
	@$(VENV)/bin/python deploy/org_upload.py

tools: $(STAMP)

template-tools: $(SAM_STAMP) $(CHECKOV_STAMP)

# $(call install-venv,venv,requirements file): a venv with the file's pinned tools, or a clear error.
define install-venv
	@command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs), then run make again" >&2; exit 1; }
	@command -v python3 >/dev/null || { echo "error: python3 not found: install Python 3.9+ with venv (e.g. apt-get install python3 python3-venv)" >&2; exit 1; }
	@test -x $(1)/bin/pip || python3 -m venv $(1) || { echo "error: could not create $(1): install python3-venv" >&2; exit 1; }
	@echo "installing the pinned tools of $(2) into $(1)"
	@$(1)/bin/pip install --quiet --disable-pip-version-check -r $(2) || { echo "error: pip could not install $(2) into $(1) (is PyPI reachable?)" >&2; exit 1; }
	@rm -f $(1)/.installed-* && touch $@
endef

$(STAMP): requirements-dev.txt
	$(call install-venv,$(VENV),requirements-dev.txt)

$(SAM_STAMP): requirements-sam.txt
	$(call install-venv,$(SAM_VENV),requirements-sam.txt)

$(CHECKOV_STAMP): requirements-checkov.txt
	$(call install-venv,$(CHECKOV_VENV),requirements-checkov.txt)

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

# template-tools too: the organisation template's tests translate template.yaml with .venv-sam's SAM translator.
cargo-test: tools template-tools
	cargo test --workspace --locked

lint-template: tools template-tools
	cfn-lint template.yaml deploy/monitoring.yaml
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --quiet --compact --skip-download

# The performance figures of issue 5 (docs/benchmarks.md): API calls against the floor, deletion
# pace under throttling, the planner at 1M snapshots, binary sizes and init time.
bench: tools
	@bash bench/run.sh
