#!/usr/bin/env bash
# Compares serverlab's load generator with wrk on the same target, both
# pinned to the same core, same connections and duration; prints the ratio
# of requests per second, and the generator's CPU per request (closed loop
# for both, and serverlab at a fixed open-loop rate).
#
# Usage: bench/wrk_compare.sh [URL]
#   Without URL it starts `serverlab serve --arch $ARCH` pinned to $SERVER_CPU.
# Environment (defaults): ARCH=reactor-per-core WORKERS=1 CONNS=50 DURATION=5s
#   REPS=3 RATE=10000 GEN_CPU=0 SERVER_CPU=1 PATH_=/hello
#   SERVERLAB=target/release/serverlab (build it: cargo build --release)
# Needs: wrk, taskset, /usr/bin/time, jq.
set -euo pipefail

ARCH=${ARCH:-reactor-per-core}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-50}
DURATION=${DURATION:-5s}
REPS=${REPS:-3}
RATE=${RATE:-10000}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
PATH_=${PATH_:-/hello}
SERVERLAB=${SERVERLAB:-target/release/serverlab}

source "$(dirname "$0")/lib.sh"
need wrk taskset jq /usr/bin/time "$SERVERLAB"
scratch wrkcmp

if [[ $# -ge 1 ]]; then
    url=$1
    target="$url"
else
    serve_on server "$SERVER_CPU" "$SERVERLAB" --arch "$ARCH" --workers "$WORKERS"
    url="http://$addr$PATH_"
    target="serverlab serve --arch $ARCH --workers $WORKERS (cpu $SERVER_CPU)"
fi

echo "target: $target -> $url"
echo "generators pinned to cpu $GEN_CPU, 1 thread, $CONNS connections, $DURATION, $REPS reps"

# cpu seconds (user+sys) of a command, from /usr/bin/time
timed() { /usr/bin/time -f '%U %S' -o "$tmp/time" "$@"; }
cpu_of() { awk '{print $1 + $2}' "$tmp/time"; }

wrk_rps=(); sl_rps=(); wrk_cpr=(); sl_cpr=()
for rep in $(seq "$REPS"); do
    timed taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "$url" >"$tmp/wrk.out"
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")
    reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
    wrk_rps+=("$rps"); wrk_cpr+=("$(echo "$(cpu_of) $reqs" | awk '{printf "%.2f", $1 * 1e6 / $2}')")

    timed taskset -c "$GEN_CPU" "$SERVERLAB" load "$url" -t1 -c"$CONNS" -d"$DURATION" --json >"$tmp/sl.json"
    rps=$(jq .achieved_rate "$tmp/sl.json")
    reqs=$(jq '.corrected.count' "$tmp/sl.json")
    sl_rps+=("$rps"); sl_cpr+=("$(echo "$(cpu_of) $reqs" | awk '{printf "%.2f", $1 * 1e6 / $2}')")
    echo "rep $rep: wrk ${wrk_rps[-1]} req/s (${wrk_cpr[-1]} us cpu/req)," \
        "serverlab ${sl_rps[-1]} req/s (${sl_cpr[-1]} us cpu/req), errors $(jq '.errors' -c "$tmp/sl.json")"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
w=$(median "${wrk_rps[@]}"); s=$(median "${sl_rps[@]}")
echo "median requests/s: wrk $w, serverlab $s, ratio serverlab/wrk $(awk -v s="$s" -v w="$w" 'BEGIN {printf "%.3f", s / w}')"
echo "median generator cpu per request (closed loop): wrk $(median "${wrk_cpr[@]}") us, serverlab $(median "${sl_cpr[@]}") us"

# Open loop at a fixed rate: CPU per request of the generator process.
timed taskset -c "$GEN_CPU" "$SERVERLAB" load "$url" -t1 -c"$CONNS" -d"$DURATION" -R "$RATE" --json >"$tmp/open.json"
reqs=$(jq '.corrected.count' "$tmp/open.json")
echo "open loop at $RATE req/s: achieved $(jq .achieved_rate "$tmp/open.json") req/s," \
    "process cpu $(echo "$(cpu_of) $reqs" | awk '{printf "%.2f", $1 * 1e6 / $2}') us/request" \
    "(engine threads: $(jq '.cpu.us_per_request | . * 100 | round / 100' "$tmp/open.json") us/request)," \
    "corrected p99 $(jq .corrected.p99_us "$tmp/open.json") us"
