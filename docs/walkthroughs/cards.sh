#!/usr/bin/env bash
# A virtual card: an operator verifies the customer, who creates, activates and reveals a card;
# then the card-network simulator authorizes, clears, increments, reverses and refunds with it.
# Run against `koban serve --dev`, from the directory it runs in (the simulator reads the dev
# card keys at ./koban-data/card-keys.dev.json, or KOBAN_CARD_KEYS_FILE).
. "$(dirname "$0")/lib.sh"

sign_up "hanako-$RUN@example.com" Hanako customer
H="authorization: Bearer $TOKEN"
HS=$SECRET
HANAKO=$(api 200 GET /v1/me -H "$H" | field id)

# Cards are issued to verified customers: Hanako asks, an operator checks and approves.
api 202 POST /v1/kyc -H "$H" -H "$J" -d '{"legal_name":"Hanako Yamada"}'
operator "boss-$RUN@example.com" admin # the first admin, made with `koban admin create`
OP="authorization: Bearer $TOKEN"
api 200 GET /v1/ops/kyc -H "$OP"
api 204 POST "/v1/ops/kyc/$HANAKO/approve" -H "$OP" -H "$J" -d '{"legal_name":"Hanako Yamada"}'

# A new card is inactive and shown masked; activating and revealing it each take a step-up.
CARD=$(api 201 POST /v1/cards -H "$H" -H "$J" -d '{"name":"Online shopping"}' | field id)
STEP=$(api 403 POST "/v1/cards/$CARD/activate" -H "$H" -H "$J" -d '{}' | field step_up.id)
next_step # Hanako's enrolment used this step's code
H="authorization: Bearer $(api 200 POST "/v1/cards/$CARD/activate" -H "$H" -H "$J" \
    -d "{\"step_up\":{\"id\":\"$STEP\",\"code\":\"$(totp "$HS")\"}}" | field session.token)"
STEP=$(api 403 POST "/v1/cards/$CARD/reveal" -H "$H" -H "$J" -d '{}' | field step_up.id)
next_step
CARD_DETAILS=$(api 200 POST "/v1/cards/$CARD/reveal" -H "$H" -H "$J" \
    -d "{\"step_up\":{\"id\":\"$STEP\",\"code\":\"$(totp "$HS")\"}}")
NUMBER=$(field number <<<"$CARD_DETAILS")
EXPIRY="$(field exp_month <<<"$CARD_DETAILS")/$(field exp_year <<<"$CARD_DETAILS")"
SECURITY_CODE=$(field security_code <<<"$CARD_DETAILS")
H="authorization: Bearer $(field session.token <<<"$CARD_DETAILS")"

# The card spends the wallet: the simulator's purchases add up to about 12,000 yen.
api 201 POST /v1/sandbox/faucet -H "$H" -H "$J" -H "idempotency-key: $(K)" -d '{"amount":20000}' >/dev/null
$KOBAN card-network --url "$B" --number "$NUMBER" --expiry "$EXPIRY" --security-code "$SECURITY_CODE"
api 200 GET "/v1/cards/$CARD/activity" -H "$H"
echo "cards walkthrough: done"
