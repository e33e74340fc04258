#!/usr/bin/env bash
# Money in the sandbox: test money into a wallet, a shop paid by QR code and refunded, a
# customer's one-time payment code charged at a till, and a transfer to another customer.
# Run against `koban serve --dev`.
. "$(dirname "$0")/lib.sh"

# Hanako, a customer, and a shop, each with an authenticator app (as in sign-in.sh).
sign_up "hanako-$RUN@example.com" Hanako customer
H="authorization: Bearer $TOKEN"
HS=$SECRET
sign_up "shop-$RUN@example.com" "Corner Shop" merchant
M="authorization: Bearer $TOKEN"
MS=$SECRET

# Test money (sandbox only: at most 100,000 at once, within the wallet's limits). Amounts are
# integer minor units: yen for JPY. Every money-moving POST carries an Idempotency-Key.
api 201 POST /v1/sandbox/faucet -H "$H" -H "$J" -H "idempotency-key: $(K)" -d '{"amount":20000}'
api 200 GET /v1/wallet -H "$H" # balance, available, tier, limits, spent today

# The shop makes an API key for its till. A sensitive request first answers 403
# step-up-required with step_up.id; the same request again with the code confirms it.
KEY_REQUEST='"name":"till","environment":"test","scopes":["payments:read","payments:write","refunds:write"]'
STEP=$(api 403 POST /v1/merchant/api-keys -H "$M" -H "$J" -d "{$KEY_REQUEST}" | field step_up.id)
next_step # the shop's enrolment used this step's code
ANSWER=$(api 201 POST /v1/merchant/api-keys -H "$M" -H "$J" \
    -d "{$KEY_REQUEST,\"step_up\":{\"id\":\"$STEP\",\"code\":\"$(totp "$MS")\"}}")
KEY="authorization: Bearer $(field key <<<"$ANSWER")" # shown once; kept hashed
M="authorization: Bearer $(field session.token <<<"$ANSWER")" # each step-up renews the session

# The shop asks for 1,200 yen; the till shows qr_payload as a QR code.
Q=$(api 201 POST /v1/merchant/payment-requests -H "$KEY" -H "$J" -H "idempotency-key: $(K)" \
    -d '{"amount":1200,"reference":"order-42","expires_in_s":300}' | field qr_payload)
# Hanako's app scans it, shows who asks for how much, and pays (step-up from 10,000 yen).
api 200 POST /v1/qr/inspect -H "$H" -H "$J" -d "{\"payload\":\"$Q\"}"
PAYMENT=$(api 201 POST /v1/qr/pay -H "$H" -H "$J" -H "idempotency-key: $(K)" -d "{\"payload\":\"$Q\"}" | field id)
# A partial refund, up to what was paid.
api 201 POST "/v1/merchant/payments/$PAYMENT/refunds" -H "$KEY" -H "$J" -H "idempotency-key: $(K)" \
    -d '{"amount":500}'

# The other way: Hanako shows a one-time code (60 seconds, at most 9,999 yen) and the till
# charges it.
CODE=$(api 201 POST /v1/payment-codes -H "$H" | field code)
api 201 POST /v1/merchant/charges -H "$KEY" -H "$J" -H "idempotency-key: $(K)" \
    -d "{\"code\":\"$CODE\",\"amount\":800,\"reference\":\"till-7\"}"
api 410 POST /v1/merchant/charges -H "$KEY" -H "$J" -H "idempotency-key: $(K)" \
    -d "{\"code\":\"$CODE\",\"amount\":800,\"reference\":\"till-8\"}" # used once

# A transfer to another customer, by e-mail address, phone number or @handle. The payer sees
# the payee's masked name first; a new payee asks for step-up, bound to that amount and payee.
sign_up "taro-$RUN@example.com" Taro customer
api 200 GET "/v1/payees/lookup?to=taro-$RUN@example.com" -H "$H"
TRANSFER="\"to\":\"taro-$RUN@example.com\",\"amount\":3000,\"message\":\"dinner\""
KEY_P2P=$(K) # the retry with the step-up is the same request: the same key
STEP=$(api 403 POST /v1/transfers -H "$H" -H "$J" -H "idempotency-key: $KEY_P2P" -d "{$TRANSFER}" | field step_up.id)
ANSWER=$(api 201 POST /v1/transfers -H "$H" -H "$J" -H "idempotency-key: $KEY_P2P" \
    -d "{$TRANSFER,\"step_up\":{\"id\":\"$STEP\",\"code\":\"$(totp "$HS")\"}}")
field status <<<"$ANSWER" # completed
H="authorization: Bearer $(field session.token <<<"$ANSWER")"
api 200 GET '/v1/wallet/transactions?limit=10' -H "$H"
echo "payments walkthrough: done"
