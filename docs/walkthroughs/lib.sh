# What the walkthroughs share; each walkthrough sources it. Needs curl and python3.
#   KOBAN_URL  the server, started with `koban serve --dev` (default http://127.0.0.1:8080)
#   KOBAN      how to run koban's own commands (default: cargo run -q --release --)
# Database and card keys follow koban's own defaults (./koban-data) or KOBAN_DATABASE_URL and
# KOBAN_CARD_KEYS_FILE, as for `koban serve`.
set -euo pipefail
B="${KOBAN_URL:-http://127.0.0.1:8080}"
J='content-type: application/json'
KOBAN="${KOBAN:-cargo run -q --release --}"
RUN="$(date +%s)$RANDOM" # makes this run's addresses new, so a walkthrough can run again

# api STATUS METHOD PATH [curl arguments...]: sends one request and prints the answer's body;
# the walkthrough stops, showing the answer, if its status is not STATUS.
api() {
    local want=$1 method=$2 path=$3 out status
    shift 3
    out=$(curl -sS -X "$method" "$B$path" -w '\n%{http_code}' "$@")
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$status" != "$want" ]; then
        echo "$method $path answered $status, not $want: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# field PATH: one field of the JSON on stdin, by a dotted path (list items by number).
field() {
    python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

# totp SECRET: the code an authenticator app shows now (RFC 6238, 30-second steps).
totp() {
    python3 -c 'import base64,hmac,struct,sys,time
k = base64.b32decode(sys.argv[1] + "=" * (-len(sys.argv[1]) % 8))
h = hmac.new(k, struct.pack(">Q", int(time.time()) // 30), "sha1").digest()
o = h[-1] & 15
print("%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7fffffff) % 10**6))' "$1"
}

# next_step: waits for the next 30-second step; each step's code is accepted once per account.
next_step() { sleep $((30 - $(date +%s) % 30)); }

# K: a new Idempotency-Key (a retry of the same request reuses its key).
K() { echo "k-$(date +%s%N)"; }

# mail_count ADDRESS: how many messages the --dev mailbox holds for ADDRESS.
mail_count() {
    api 200 GET "/v1/dev/mailbox?to=$1" | python3 -c 'import json,sys;print(len(json.load(sys.stdin)))'
}

# mail_code ADDRESS SEEN: the six-digit code in the newest message to ADDRESS, once it holds
# more than SEEN messages (the outbox delivers within a second; waits at most 10 s).
mail_code() {
    local i
    for i in $(seq 1 100); do
        if [ "$(mail_count "$1")" -gt "$2" ]; then
            api 200 GET "/v1/dev/mailbox?to=$1" \
                | python3 -c 'import json,re,sys;print(re.search(r"\b\d{6}\b",json.load(sys.stdin)[0]["body"]).group())'
            return
        fi
        sleep 0.1
    done
    echo "no new message to $1" >&2
    return 1
}

# enrol_app: enrols an authenticator app for the password-only session TOKEN. Sets TOKEN (the
# new, full session), SECRET (the app's TOTP secret) and RECOVERY (ten recovery codes, a line each).
enrol_app() {
    local enrol factor
    enrol=$(api 201 POST /v1/factors/totp -H "authorization: Bearer $TOKEN")
    factor=$(field factor_id <<<"$enrol")
    SECRET=$(field otpauth_uri <<<"$enrol" | sed 's/.*secret=\([A-Z2-7]*\).*/\1/')
    enrol=$(api 200 POST "/v1/factors/totp/$factor/confirm" -H "authorization: Bearer $TOKEN" -H "$J" \
        -d "{\"code\":\"$(totp "$SECRET")\"}")
    TOKEN=$(field session.token <<<"$enrol")
    RECOVERY=$(field recovery_codes <<<"$enrol" | python3 -c 'import json,sys;print("\n".join(json.load(sys.stdin)))')
}

# sign_up EMAIL NAME KIND: a verified customer or merchant account with an authenticator app,
# as in sign-in.sh. Sets TOKEN, SECRET and RECOVERY as enrol_app does.
sign_up() {
    local email=$1 name=$2 kind=$3 password="lantern pebble orchard" code
    api 202 POST /v1/signup -H "$J" \
        -d "{\"email\":\"$email\",\"password\":\"$password\",\"display_name\":\"$name\",\"kind\":\"$kind\"}" >/dev/null
    code=$(mail_code "$email" 0)
    api 204 POST /v1/signup/verify -H "$J" -d "{\"email\":\"$email\",\"code\":\"$code\"}" >/dev/null
    TOKEN=$(api 200 POST /v1/login -H "$J" -d "{\"email\":\"$email\",\"password\":\"$password\"}" | field session.token)
    enrol_app
}

# operator EMAIL ROLE: a new operator made with `koban admin create` (which needs the server's
# database), enrolled through its link as that operator would. Sets TOKEN, SECRET and RECOVERY.
operator() {
    local email=$1 role=$2 password="operator lantern pebble" link
    link=$($KOBAN admin create --email "$email" --role "$role" | grep 'token=')
    api 204 POST /v1/operators/enrol -H "$J" -d "{\"token\":\"${link##*token=}\",\"password\":\"$password\"}" >/dev/null
    TOKEN=$(api 200 POST /v1/login -H "$J" -d "{\"email\":\"$email\",\"password\":\"$password\"}" | field session.token)
    enrol_app
}
