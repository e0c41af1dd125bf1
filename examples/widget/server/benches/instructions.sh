#!/bin/bash
# Instructions per anonymous GET of one Widget (or per create), counted by callgrind in the
# server process (user space only; repeatable to about 0.3% whatever else the machine does,
# unlike rates). HTTP/1.1 keep-alive over TLS from curl, after 200 warm-up requests.
#
#   cargo build --release -p widget-server
#   bash examples/widget/server/benches/instructions.sh target/release/widget-server [COUNT [get|create]]
#   APIARY_STORAGE="etcd --etcd-servers http://127.0.0.1:2379" bash .../instructions.sh ... create
#
# Needs valgrind and curl. memcpy's count grows with the bytes it copies (valgrind counts
# each round of a `rep movsb`), so moved futures show up in full.
set -euo pipefail
BIN=$(realpath "$1")
COUNT=${2:-2000}
MODE=${3:-get}
# shellcheck disable=SC2206 # the storage flags are words
STORAGE=(${APIARY_STORAGE:-memory})
DIR=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BIN" --secure-port 0 --storage "${STORAGE[@]}" \
    --anonymous-auth --authorization-mode AlwaysAllow --status-controller false > out.log 2> err.log &
SERVER=$!
for _ in $(seq 1 600); do grep -q "Serving on" out.log && break; sleep 0.2; done
URL=$(grep -o "https://127.0.0.1:[0-9]*" out.log | head -1)
WIDGETS="$URL/apis/custom.example.com/v1/namespaces/default/widgets"
curl -sfk --http1.1 -X POST -H 'content-type: application/json' -o /dev/null \
    -d '{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"replicas":1,"image":"nginx:1"}}' \
    "$WIDGETS"
# Widgets as the HTTP bench creates them (two labels, a 300-byte annotation, three spec fields).
body() {
    printf '{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{"name":"w-%06d","labels":{"app":"bench","tier":"backend"},"annotations":{"description":"%s"}},"spec":{"replicas":3,"image":"registry.example.com/team/app:1.2.3","color":"blue"}}' \
        "$1" "$(printf 'x%.0s' $(seq 1 300))" | sed 's/"/\\"/g'
}
# curl's config: `next` starts each transfer afresh, so each carries all its options.
config() {
    for i in $(seq "$1" "$2"); do
        [ "$i" -gt "$1" ] && echo next
        if [ "$MODE" = create ]; then
            printf 'url = "%s"\nrequest = "POST"\nheader = "content-type: application/json"\ndata = "%s"\n' "$WIDGETS" "$(body "$i")"
        else
            printf 'url = "%s/w1"\n' "$WIDGETS"
        fi
        printf 'output = /dev/null\ninsecure\nhttp1.1\nfail\n'
    done
}
config 2 201 > warm.cfg
config 202 $((201 + COUNT)) > run.cfg
curl -sS -K warm.cfg
callgrind_control -z "$SERVER" > /dev/null 2>&1
curl -sS -K run.cfg
callgrind_control -d "$SERVER" > /dev/null 2>&1
TOTAL=$(grep -h "^totals:" cg.out.* | awk '{print $2}')
echo "$(basename "$BIN"): $TOTAL instructions for $COUNT ${MODE}s: $((TOTAL / COUNT)) per $MODE"
