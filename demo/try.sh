#!/usr/bin/env bash
# `make try`: the sweeper and the alert function's audit, both as dry runs, against the account
# and region of the caller's own credentials (demo/try.py): no stack needed, nothing changed.
#
# Without LEDGER_TABLE they run with no ledger (a dry run has nothing to remember); with it they
# only read it (the sweeper with LEDGER_READ_ONLY=true, the alert function's dry run never
# writes). REPORT_TOPIC_ARN is unset, so the sweeper publishes no summary; the alert function
# needs a topic ARN to start and is given one that does not exist, which its dry run never uses.
# With TRY_ROLE_NAME, the same in every active account of the organisation (through that role) and
# every region of AWS_REGIONS, printed as one table (demo/try_org.py).
# Other settings of the functions (MIN_AGE_HOURS, REGIONS, TRUSTED_IMAGE_PROVIDERS, ...) are taken
# from the caller's environment, as the deployed functions take them from the template.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "DRY RUN: nothing will be deleted, tagged, stopped or published."
source demo/lambda.sh
lambda_need_tools try .venv/bin/cargo-lambda

# Who and where, before anything is built or started; try.py says why when it refuses.
preflight=$("$PY" demo/try.py preflight) || exit 2
eval "$preflight"
if [[ -n ${AMIGUARD_TRY_ROLE:-} ]]; then
  IFS=, read -ra accounts <<<"$AMIGUARD_TRY_ACCOUNTS"
  echo "organisation: ${#accounts[@]} active accounts, listed by $AMIGUARD_TRY_ACCOUNT ($AMIGUARD_TRY_CALLER)," \
    "each through role $AMIGUARD_TRY_ROLE; regions $AMIGUARD_TRY_REGIONS${AWS_ENDPOINT_URL:+, endpoint $AWS_ENDPOINT_URL}"
else
  echo "account $AMIGUARD_TRY_ACCOUNT ($AMIGUARD_TRY_CALLER), region $AWS_REGION${AWS_ENDPOINT_URL:+, endpoint $AWS_ENDPOINT_URL}"
fi
if [[ -n ${LEDGER_TABLE:-} ]]; then
  echo "ledger: $LEDGER_TABLE, read only"
else
  echo "ledger: none (LEDGER_TABLE is not set): every orphan counts as first seen now"
fi

lambda_build
if [[ -n ${AMIGUARD_TRY_ROLE:-} ]]; then
  # Every account and region: try_org.py runs the functions itself, with each role's credentials.
  LAMBDA_BIN_DIR=$LAMBDA_BIN_DIR "$PY" demo/try.py org
  exit
fi
lambda_serve
lambda_start orphan-snapshot-sweeper -u REPORT_TOPIC_ARN RUST_LOG="${RUST_LOG:-warn}" \
  DRY_RUN=true LEDGER_READ_ONLY=true
lambda_start untrusted-ami-alert RUST_LOG="${RUST_LOG:-warn}" DRY_RUN=true \
  ALERT_TOPIC_ARN="arn:$AMIGUARD_TRY_PARTITION:sns:$AWS_REGION:$AMIGUARD_TRY_ACCOUNT:amiguard-try-publishes-nothing"

"$PY" demo/try.py run
