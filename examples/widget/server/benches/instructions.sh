#!/bin/bash
# Instructions per anonymous GET of one Widget, counted by callgrind in the server process
# (user space only; repeatable to about 0.3% whatever else the machine does, unlike rates).
# HTTP/1.1 keep-alive over TLS from curl, after 200 warm-up GETs.
#
#   cargo build --release -p widget-server
#   bash examples/widget/server/benches/instructions.sh target/release/widget-server [GETS]
#
# Needs valgrind and curl. memcpy's count grows with the bytes it copies (valgrind counts
# each round of a `rep movsb`), so moved futures show up in full.
set -euo pipefail
BIN=$(realpath "$1")
GETS=${2:-2000}
DIR=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BIN" --secure-port 0 --storage memory \
    --anonymous-auth --authorization-mode AlwaysAllow --status-controller false > out.log 2> err.log &
SERVER=$!
for _ in $(seq 1 600); do grep -q "Serving on" out.log && break; sleep 0.2; done
URL=$(grep -o "https://127.0.0.1:[0-9]*" out.log | head -1)
WIDGETS="$URL/apis/custom.example.com/v1/namespaces/default/widgets"
curl -sfk --http1.1 -X POST -H 'content-type: application/json' -o /dev/null \
    -d '{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"replicas":1,"image":"nginx:1"}}' \
    "$WIDGETS"
config() { for _ in $(seq 1 "$1"); do printf 'url = "%s/w1"\noutput = /dev/null\n' "$WIDGETS"; done; }
config 200 > warm.cfg
config "$GETS" > run.cfg
curl -sfk --http1.1 -K warm.cfg
callgrind_control -z "$SERVER" > /dev/null 2>&1
curl -sfk --http1.1 -K run.cfg
callgrind_control -d "$SERVER" > /dev/null 2>&1
TOTAL=$(grep -h "^totals:" cg.out.* | awk '{print $2}')
echo "$(basename "$BIN"): $TOTAL instructions for $GETS GETs: $((TOTAL / GETS)) per GET"
