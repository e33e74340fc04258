#!/usr/bin/env bash
# Schemathesis against a running `koban serve --dev`, as a customer, a merchant and an
# operator, with every check (config: contract/schemathesis.toml). Exits non-zero on any
# failure. Needs schemathesis (SCHEMATHESIS, default: schemathesis on PATH) and what the
# walkthroughs need (docs/walkthroughs/lib.sh: KOBAN_URL, KOBAN, KOBAN_DATABASE_URL).
#   CONTRACT_EXAMPLES  examples per operation and phase (default 20)
. "$(dirname "$0")/../docs/walkthroughs/lib.sh"
SCHEMATHESIS="${SCHEMATHESIS:-schemathesis}"
CONFIG="$(cd "$(dirname "$0")" && pwd)/schemathesis.toml"
EXAMPLES="${CONTRACT_EXAMPLES:-20}"

sign_up "contract-customer-$RUN@example.com" "Contract Customer" customer
CUSTOMER=$TOKEN
sign_up "contract-shop-$RUN@example.com" "Contract Shop" merchant
MERCHANT=$TOKEN
operator "contract-admin-$RUN@example.com" admin
OPERATOR=$TOKEN

# run WHO TOKEN [schemathesis filter options...]
run() {
    local who=$1 token=$2
    shift 2
    echo "== schemathesis as the $who"
    "$SCHEMATHESIS" --config-file "$CONFIG" run "$B/openapi.json" --url "$B" \
        -H "Authorization: Bearer $token" --checks all --max-examples "$EXAMPLES" \
        --phases examples,coverage,fuzzing --workers 1 --no-color "$@"
}
status=0
run customer "$CUSTOMER" --exclude-path-regex '^/v1/(ops|merchant|network)/' || status=1
run merchant "$MERCHANT" --include-path-regex '^/v1/merchant/' || status=1
run operator "$OPERATOR" --include-path-regex '^/v1/ops/' || status=1
exit $status
