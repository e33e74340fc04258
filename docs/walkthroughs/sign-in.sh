#!/usr/bin/env bash
# Sign up, verify the e-mail address, enrol an authenticator app, sign in with two factors,
# and be throttled when guessing. Run against `koban serve --dev`.
. "$(dirname "$0")/lib.sh"
EMAIL="hanako-$RUN@example.com"
PASSWORD="lantern pebble orchard"

api 202 POST /v1/signup -H "$J" \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"display_name\":\"Hanako\"}"
# The verification code is in the mail (with --dev: GET /v1/dev/mailbox?to=ADDRESS).
CODE=$(mail_code "$EMAIL" 0)
api 204 POST /v1/signup/verify -H "$J" -d "{\"email\":\"$EMAIL\",\"code\":\"$CODE\"}"

# A password-only session can enrol the first second factor, confirm it, and sign out.
T=$(api 200 POST /v1/login -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | field session.token)
ENROL=$(api 201 POST /v1/factors/totp -H "authorization: Bearer $T") # otpauth:// URI and QR (SVG)
F=$(field factor_id <<<"$ENROL")
S=$(field otpauth_uri <<<"$ENROL" | sed 's/.*secret=\([A-Z2-7]*\).*/\1/')
CONFIRMED=$(api 200 POST "/v1/factors/totp/$F/confirm" -H "authorization: Bearer $T" -H "$J" \
    -d "{\"code\":\"$(totp "$S")\"}")
field recovery_codes <<<"$CONFIRMED" # ten recovery codes, shown once
T2=$(field session.token <<<"$CONFIRMED") # a new, full session; the old token is void
api 401 GET /v1/me -H "authorization: Bearer $T" >/dev/null
api 200 GET /v1/me -H "authorization: Bearer $T2"

# Sign in again: the password, then the second factor. Each 30-second step's code is accepted
# once, so wait for the next one.
next_step
T=$(api 200 POST /v1/login -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | field session.token)
T=$(api 200 POST /v1/login/second-factor -H "authorization: Bearer $T" -H "$J" \
    -d "{\"code\":\"$(totp "$S")\"}" | field session.token)
api 200 GET /v1/me -H "authorization: Bearer $T"
api 200 GET /v1/sessions -H "authorization: Bearer $T" # revoke one with DELETE /v1/sessions/ID

# Guessing: five wrong passwords answer 401, the sixth attempt is refused with 429 and
# Retry-After (1 s, doubling). After ten failures the account locks for 30 minutes and its
# owner gets an e-mail. Wrong second-factor codes have a count of their own.
for i in 1 2 3 4 5; do
    api 401 POST /v1/login -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"wrong guess $i\"}" >/dev/null
done
api 429 POST /v1/login -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"wrong guess 6\"}"
echo "sign-in walkthrough: done"
