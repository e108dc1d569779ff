#!/usr/bin/env bash
# What a dispatcher costs per request: serverlab's dispatcher (http, splice
# and handoff) against HAProxy (mode tcp with splice-auto, and mode http) in
# front of the same two replicas (serverlab event-loop, one loop each).
# Replicas and dispatchers run on SERVER_CPU, the generator (closed loop,
# CONNS keep-alive connections; --no-keepalive with CLOSE=1) on GEN_CPU;
# contestants alternate rep by rep. "dispatcher CPU" is the dispatcher
# process's own user+system time (threads included) over the run.
#
# Usage: bench/dispatch_compare.sh
# Environment (defaults): CONNS=32 DURATION=4s REPS=3 CLOSE=0 GEN_CPU=0
#   SERVER_CPU=1 SERVERLAB=target/release/serverlab
# Needs: taskset, jq, haproxy (apt-get install haproxy jq).
set -euo pipefail

CONNS=${CONNS:-32}
DURATION=${DURATION:-4s}
REPS=${REPS:-3}
CLOSE=${CLOSE:-0}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
SERVERLAB=$(realpath "${SERVERLAB:-target/release/serverlab}")
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

source "$(dirname "$0")/lib.sh"
need taskset jq "$SERVERLAB" "$HAPROXY"
scratch dispatch

# CPU ticks of one process (all its threads).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

replicas=() handoff=()
for i in 1 2; do
    p=$(free_port)
    taskset -c "$SERVER_CPU" "$SERVERLAB" serve --arch event-loop --listen "127.0.0.1:$p" \
        --handoff "$tmp/r$i.sock" >/dev/null 2>"$tmp/r$i.err" &
    pids+=($!)
    wait_port "$p" || { cat "$tmp/r$i.err" >&2; exit 1; }
    replicas+=("127.0.0.1:$p")
    handoff+=("127.0.0.1:$p@$tmp/r$i.sock")
done

declare -A port pid
start_ours() { # name mode replica-args...
    local name=$1 mode=$2
    shift 2
    local p
    p=$(free_port)
    local args=()
    for r in "$@"; do args+=(--replica "$r"); done
    taskset -c "$SERVER_CPU" "$SERVERLAB" dispatch --listen "127.0.0.1:$p" --mode "$mode" \
        --policy round-robin "${args[@]}" >/dev/null 2>"$tmp/$name.err" &
    pids+=($!)
    pid[$name]=$! port[$name]=$p
    wait_port "$p" || { cat "$tmp/$name.err" >&2; exit 1; }
}
start_ours serverlab-http http "${replicas[@]}"
start_ours serverlab-splice splice "${replicas[@]}"
start_ours serverlab-handoff handoff "${handoff[@]}"

start_haproxy() { # name mode extra-option
    local name=$1 mode=$2 option=$3 p
    p=$(free_port)
    cat >"$tmp/$name.cfg" <<CFG
global
    maxconn 4096
defaults
    mode $mode
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    $option
frontend f
    bind 127.0.0.1:$p
    default_backend b
backend b
    balance roundrobin
    server r1 ${replicas[0]}
    server r2 ${replicas[1]}
CFG
    taskset -c "$SERVER_CPU" "$HAPROXY" -db -f "$tmp/$name.cfg" >/dev/null 2>"$tmp/$name.err" &
    pids+=($!)
    pid[$name]=$! port[$name]=$p
    wait_port "$p" || { cat "$tmp/$name.err" >&2; exit 1; }
}
start_haproxy haproxy-tcp-splice tcp "option splice-auto"
start_haproxy haproxy-http http "option http-keep-alive"

keep=()
[[ $CLOSE == 1 ]] && keep=(--no-keepalive)
contestants="serverlab-splice haproxy-tcp-splice serverlab-http haproxy-http serverlab-handoff"
echo "replicas: 2 x serverlab event-loop; everything on cpu $SERVER_CPU; generator: serverlab load ${keep[*]:-keep-alive}, 1 thread on cpu $GEN_CPU, $CONNS connections, $DURATION a run, $REPS reps, alternating"
printf '%-20s %4s %10s %22s\n' dispatcher rep "req/s" "req/dispatcher CPU-s"
for rep in $(seq "$REPS"); do
    for c in $contestants; do
        before=$(ticks "${pid[$c]}")
        taskset -c "$GEN_CPU" "$SERVERLAB" load "${keep[@]}" -t 1 -c "$CONNS" -d "$DURATION" --json \
            "http://127.0.0.1:${port[$c]}/hello" >"$tmp/out.json"
        after=$(ticks "${pid[$c]}")
        jq -r --arg c "$c" --arg r "$rep" --argjson cpu "$(( after - before ))" --argjson hz "$hz" \
            '[$c, $r, (.statuses.s2xx / .duration_s | floor),
              (if $cpu > 0 then (.statuses.s2xx / ($cpu / $hz) | floor) else "above \(.statuses.s2xx / (1 / $hz) | floor) (under a tick)" end)] | @tsv' "$tmp/out.json" |
            awk -F'\t' '{printf "%-20s %4s %10s %22s\n", $1, $2, $3, $4}'
    done
done
