#!/usr/bin/env bash
# `make test`: start the infrastructure that is not already running, apply topics and migrations,
# run unit, integration, e2e and fault smoke tests (e2e and faults start their own services),
# then stop what this script started. The exit code is pytest's.
set -euo pipefail
SAY_PREFIX="test"  # quoted: `test` is also a command name
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STARTED=$RUN_DIR/test-infra.started
t0=$(now)
cleanup() {
    local rc=$?
    bash "$LOCAL_DIR/infra.sh" stop-started "$STARTED" || true
    say "wall time $(elapsed "$t0")s (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The invoice tests read PDFs the way a person checks them, with poppler's pdftotext.
ensure_apt_pkg pdftotext poppler-utils
bash "$LOCAL_DIR/infra.sh" up "$STARTED"
say "infrastructure ready after $(elapsed "$t0")s"
cd "$REPO_ROOT"
.venv/bin/backroom topics >/dev/null
.venv/bin/backroom migrate
# Arguments (paths, -k, ...) replace the default selection of the whole suite.
# Default: pure tests first, then one service at a time, then the whole system, then the short
# fault set (tests/faults: its own isolated stack on 27xxx ports; one kill of each kind).
[[ $# -gt 0 ]] || set -- tests/unit tests/integration tests/e2e tests/faults
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
