#!/usr/bin/env bash
# What the load generator's open loop costs against its closed loop: CPU
# per request (the generator thread's own user+system time, as `serverlab
# load` reports it) and the send lag (how late requests left against their
# schedule), at a few fixed rates and closed, alternating the contestants
# rep by rep so that drift on a noisy machine hits them alike.
#
# A mode is `closed` (CONNS connections), `closed:N` (N connections: a
# closed loop slowed to an open loop's throughput, for a like-for-like
# comparison), `RATE` (open loop, every send on time) or `RATE/SLACK`
# (open loop with --send-slack SLACK). `uring:RATE[/SLACK]` and
# `uring-timer:RATE[/SLACK]` run the io_uring probe instead
# (bench/probes/openloop-uring: every connection's system calls batched in
# one ring submission; `uring-timer` wakes only when a send is due, SLACK in
# µs, e.g. 50us); `wake:RATE` runs it without a server, only waking RATE
# times a second (how late a bare wake-up comes: the floor under any send
# lag). They need the probe built:
#   (cd bench/probes/openloop-uring && cargo build --release)
#
# Usage: bench/openloop_cost.sh
# Environment (defaults): ARCH=reactor-per-core WORKERS=1 CONNS=64 DURATION=5s
#   REPS=3 MODES="closed closed:2 10000 30000 50000 50000/50us 100000 100000/50us"
#   GEN_CPU=0 SERVER_CPU=1 PATH_=/hello
#   SERVERLAB=target/release/serverlab (build it: cargo build --release)
#   PROBE=bench/probes/openloop-uring/target/release/openloop-uring
#   PIPELINE=1 (requests in flight per connection, for both generators: with
#   1 a slow answer delays the connection's next send and counts as send
#   lag; a deep pipeline, e.g. 16, leaves only the generator's own lateness)
# Needs: taskset, jq.
set -euo pipefail

ARCH=${ARCH:-reactor-per-core}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
DURATION=${DURATION:-5s}
REPS=${REPS:-3}
MODES=${MODES:-closed closed:2 10000 30000 50000 50000/50us 100000 100000/50us}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
PATH_=${PATH_:-/hello}
PIPELINE=${PIPELINE:-1}
SERVERLAB=${SERVERLAB:-target/release/serverlab}
PROBE=${PROBE:-bench/probes/openloop-uring/target/release/openloop-uring}

source "$(dirname "$0")/lib.sh"
need taskset jq "$SERVERLAB"
[[ $MODES == *uring* || $MODES == *wake:* ]] && need "$PROBE"
scratch olcost

serve_on server "$SERVER_CPU" "$SERVERLAB" --arch "$ARCH" --workers "$WORKERS"
url="http://$addr$PATH_"

echo "server: serverlab serve --arch $ARCH --workers $WORKERS on cpu $SERVER_CPU; $url"
echo "generator: 1 thread on cpu $GEN_CPU, $CONNS connections (pipeline $PIPELINE), $DURATION a run, $REPS reps, alternating"
printf '%-24s %4s %10s %11s %13s %13s %12s\n' mode rep "req/s" "µs/request" "send lag p50" "send lag p99" "latency p99"
# One run of MODE, its JSON (the fields of `serverlab load --json` read below) on stdout.
run_mode() {
    local mode=$1 spec
    case $mode in
        wake:*)
            taskset -c "$GEN_CPU" "$PROBE" none "${mode#wake:}" --duration "${DURATION%s}" --warmup 1
            return
            ;;
        uring:* | uring-timer:*)
            spec=${mode#*:}
            local probe=("$addr" "${spec%%/*}" --conns "$CONNS" --path "$PATH_"
                --pipeline "$PIPELINE" --duration "${DURATION%s}" --warmup 1)
            local slack=${spec#*/}
            [[ $spec == */* ]] && probe+=(--slack "${slack%us}")
            [[ $mode == uring-timer:* ]] && probe+=(--wake timer)
            taskset -c "$GEN_CPU" "$PROBE" "${probe[@]}"
            return
            ;;
    esac
    local args=(-t 1 -d "$DURATION" --warmup 1s --json --pipeline "$PIPELINE")
    case $mode in
        closed) args+=(-c "$CONNS") ;;
        closed:*) args+=(-c "${mode#closed:}") ;;
        */*) args+=(-c "$CONNS" --rate "${mode%/*}" --send-slack "${mode#*/}") ;;
        *) args+=(-c "$CONNS" --rate "$mode") ;;
    esac
    taskset -c "$GEN_CPU" "$SERVERLAB" load "${args[@]}" "$url"
}

for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        run_mode "$mode" >"$tmp/out.json"
        jq -r --arg m "$mode" --arg r "$rep" \
            '[$m, $r, (.achieved_rate|floor), (.cpu.us_per_request*100|round/100),
              .send_lag.p50_us, .send_lag.p99_us, .corrected.p99_us] | @tsv' "$tmp/out.json" |
            awk -F'\t' '{printf "%-24s %4s %10s %11s %10s µs %10s µs %9s µs\n", $1, $2, $3, $4, $5, $6, $7}'
    done
done
