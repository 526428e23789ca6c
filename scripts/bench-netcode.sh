#!/usr/bin/env bash
# netcode 1.02 figures for BENCHMARKS.md, side by side in one run: handshakes and payload cost
# against renetcode (sans-IO and over loopback UDP, one server core), memory per session, and
# 100,000 sessions over real sockets with today's plaintext protocol (loadgen) and netcode
# (netcode_loadgen) back to back at the same load.
#   scripts/bench-netcode.sh            everything (~3 minutes on 2 cores)
#   RATES="1 2" SESSIONS=100000         loadgen rates and sessions
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p pvp-net --examples
bin=target/release/examples
"$bin/netcode_bench" --rounds 5 --handshakes 4000 --payloads 200000 --hold 100000 --socket-seconds 3
for rate in ${RATES:-1 2}; do
    echo; echo "## 100,000 sessions at ${rate} Hz: plaintext proto, then netcode"
    "$bin/loadgen" --sessions "${SESSIONS:-100000}" --rate "$rate" --duration 5 | tail -6
    "$bin/netcode_loadgen" --sessions "${SESSIONS:-100000}" --rate "$rate" --duration 5 | tail -6
done
