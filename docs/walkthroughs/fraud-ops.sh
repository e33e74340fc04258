#!/usr/bin/env bash
# Fraud operations: a customer talked into paying a new account (a mule); the alert and the
# case it opens; an analyst assigns it, comments, freezes the mule, reverses what the mule
# still holds and compensates the victim, which a second operator approves; the case closes.
# Run against `koban serve --dev`, from the directory it runs in (operators are made with
# `koban admin create`, which opens the server's database).
. "$(dirname "$0")/lib.sh"

# pay TOKEN_VAR SECRET TO AMOUNT: a first payment to a new payee, confirmed with step-up. Sets
# PAID (the transfer's id) and renews the session in the variable named TOKEN_VAR.
pay() {
    local body="\"to\":\"$3\",\"amount\":$4" key step answer
    key=$(K)
    step=$(api 403 POST /v1/transfers -H "authorization: Bearer ${!1}" -H "$J" -H "idempotency-key: $key" \
        -d "{$body}" | field step_up.id)
    answer=$(api 201 POST /v1/transfers -H "authorization: Bearer ${!1}" -H "$J" -H "idempotency-key: $key" \
        -d "{$body,\"step_up\":{\"id\":\"$step\",\"code\":\"$(totp "$2")\"}}")
    printf -v "$1" '%s' "$(field session.token <<<"$answer")"
    PAID=$(field id <<<"$answer")
}

# A mule: a new account that people are talked into paying ("a sure investment").
sign_up "mule-$RUN@example.com" "Quick Profit" customer
MULE=$(api 200 GET /v1/me -H "authorization: Bearer $TOKEN" | field id)
# Hanako and two others, each with test money.
sign_up "hanako-$RUN@example.com" Hanako customer
HANAKO=$TOKEN HANAKO_SECRET=$SECRET
VICTIM=$(api 200 GET /v1/me -H "authorization: Bearer $HANAKO" | field id)
sign_up "taro-$RUN@example.com" Taro customer
TARO=$TOKEN TARO_SECRET=$SECRET
sign_up "jiro-$RUN@example.com" Jiro customer
JIRO=$TOKEN JIRO_SECRET=$SECRET
for who in HANAKO TARO JIRO; do
    api 201 POST /v1/sandbox/faucet -H "authorization: Bearer ${!who}" -H "$J" -H "idempotency-key: $(K)" \
        -d '{"amount":50000}' >/dev/null
done

# Each pays the mule; a first payment to a new payee takes the payer's step-up.
next_step # their enrolments used this step's code
pay HANAKO "$HANAKO_SECRET" "mule-$RUN@example.com" 20000
LOST=$PAID
pay TARO "$TARO_SECRET" "mule-$RUN@example.com" 3000
pay JIRO "$JIRO_SECRET" "mule-$RUN@example.com" 3000
H="authorization: Bearer $HANAKO"
TRANSFER=$(api 201 POST /v1/transfers -H "$H" -H "$J" -H "idempotency-key: $(K)" \
    -d "{\"to\":\"mule-$RUN@example.com\",\"amount\":4000,\"message\":\"fee\"}" | field id)

# Two operators, each made with `koban admin create`: an analyst's work is approved by another.
operator "analyst-$RUN@example.com" analyst
OP="authorization: Bearer $TOKEN"
operator "approver-$RUN@example.com" approver
APPROVER="authorization: Bearer $TOKEN"

# Alerts as they are raised (written within 100 ms of the decision), and the cases they form.
# The mule is the subject of one: a week-old account paid by a third new sender in an hour.
api 200 GET /v1/ops/risk/alerts -H "$OP"
for i in $(seq 1 50); do
    CASE=$(api 200 GET '/v1/ops/cases?status=open' -H "$OP" \
        | python3 -c 'import json,sys;print(next((c["id"] for c in json.load(sys.stdin) if c["subject"]==sys.argv[1]),""))' "$MULE")
    [ -n "$CASE" ] && break
    sleep 0.2
done
[ -n "$CASE" ] || { echo "no case about the mule" >&2; exit 1; }
# A case's timeline: logins, devices, networks, contact and factor changes, payments and the
# decisions on them (with the rules that fired), alerts, comments.
api 200 GET "/v1/ops/cases/$CASE" -H "$OP"
api 200 POST "/v1/ops/cases/$CASE/assign" -H "$OP" -H "$J" -d '{}' >/dev/null
api 204 POST "/v1/ops/cases/$CASE/comments" -H "$OP" -H "$J" -d '{"body":"three new senders within a minute, 30,000 in all"}'

# Freeze the mule (nothing in, nothing out), reverse what it still holds (the receiver stays
# frozen), and compensate the victim from the fraud-losses account for the rest.
api 200 POST "/v1/ops/customers/$MULE/freeze" -H "$OP" -H "$J" -d '{"reason":"suspected mule"}'
api 200 POST "/v1/ops/transfers/$TRANSFER/reverse" -H "$OP" -H "$J" \
    -d "{\"case_id\":\"$CASE\",\"note\":\"the victim was deceived\"}"
# A compensation always waits for a second operator with the approver role (never the one who
# asked, nor one they invited). It names the transfers the victim lost; its amount is at most
# what they lost less what was already reversed or compensated.
ACTION=$(api 202 POST /v1/ops/compensations -H "$OP" -H "$J" -H "idempotency-key: $(K)" \
    -d "{\"customer\":\"$VICTIM\",\"amount\":20000,\"case_id\":\"$CASE\",\"transfers\":[\"$LOST\"],\"note\":\"lost to the mule\"}" \
    | field id)
api 200 POST "/v1/ops/risk-actions/$ACTION/approve" -H "$APPROVER"
api 200 GET /v1/wallet -H "$H" # Hanako has her 24,000 yen back
api 200 POST "/v1/ops/cases/$CASE/close" -H "$OP" -H "$J" -d '{"outcome":"fraud_confirmed"}' >/dev/null

# The measures: alerts by rule, decisions by action, holds pending and amount held, amounts
# lost, compensated and reversed, time to detect (a case's first event to its first alert).
api 200 GET /v1/ops/risk/stats -H "$OP"
api 200 GET /v1/ops/risk/rules -H "$OP" >/dev/null # the live rules with their digest
echo "fraud-operations walkthrough: done"
