#!/usr/bin/env bash
# Does a short, fixed piece of work timed on a CPU tell how fast the next
# measurement on it will be? On a virtual machine the same server, on the
# same CPUs, serves a different number of requests per CPU-second from one
# run to the next, and only part of that is the steal the runner already
# watches (bench/src/runner/steal.rs). A "pace" probe run before each
# measurement could flag the rest, if its figures followed the server's.
#
# Each round runs the probe (bench/probes/pace: ALU, memory walk, system
# call, loopback TCP, cross-CPU wake-up, 50 µs sleep; each on both CPUs),
# then two yardsticks, ARCH serving /hello on SERVER_CPU with CONNS
# connections from GEN_CPU for DURATION each: a closed loop (the server
# saturated: `closed`) and an open loop at RATE req/s (the server sleeping
# and waking between requests, where the quick suite's runs differed most:
# `open`). Each records the server's requests per CPU-second, and `steal`
# the share of both CPUs the host took over the two. At the end it prints
# how each probe figure correlates with each yardstick, over every round
# and over the rounds the host took under 2 % in.
#
# Usage: bench/pace_probe.sh
# Environment (defaults): ROUNDS=60 DURATION=2s ARCH=event-loop CONNS=64
#   RATE=2000
#   SERVER_CPU=0 GEN_CPU=1 OUT=(scratch; the rows, one per round)
#   SERVERLAB=target/release/serverlab (build it: cargo build --release)
#   PROBE=bench/probes/pace/target/release/pace
#     (build it: cd bench/probes/pace && cargo build --release)
# Needs: taskset, jq, python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-60}
DURATION=${DURATION:-2s}
ARCH=${ARCH:-event-loop}
CONNS=${CONNS:-64}
RATE=${RATE:-2000}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
SERVERLAB=${SERVERLAB:-target/release/serverlab}
PROBE=${PROBE:-bench/probes/pace/target/release/pace}
need taskset jq python3 "$SERVERLAB" "$PROBE"
scratch pace
OUT=${OUT:-$tmp/rows}
: >"$OUT"

# cpu_ticks PID: the process's user + system time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# steal_ticks: "stolen all" ticks of the two CPUs, from /proc/stat.
steal_ticks() {
    awk -v a="cpu$SERVER_CPU" -v b="cpu$GEN_CPU" \
        '$1 == a || $1 == b { s += $9; t += $2+$3+$4+$5+$6+$7+$8+$9 } END { print s, t }' /proc/stat
}
hz=$(getconf CLK_TCK)
secs=$(python3 -c "import sys; d=sys.argv[1]; print(float(d[:-2])/1000 if d.endswith('ms') else float(d.rstrip('s')))" "$DURATION")

serve_on server "$SERVER_CPU" "$SERVERLAB" --arch "$ARCH"
for round in $(seq "$ROUNDS"); do
    probe=$("$PROBE" "$SERVER_CPU" "$GEN_CPU")
    read -r s0 t0 < <(steal_ticks)
    figures=""
    for mode in closed open; do
        rate_arg=()
        [[ $mode == open ]] && rate_arg=(-R "$RATE")
        c0=$(cpu_ticks "$served_pid")
        rate=$(taskset -c "$GEN_CPU" "$SERVERLAB" load -c "$CONNS" -t 1 -d "$DURATION" \
            "${rate_arg[@]}" --json "http://$addr/hello" | jq -r '.achieved_rate' | head -1)
        c1=$(cpu_ticks "$served_pid")
        per_cpu=$(python3 -c "print(round($rate * $secs * $hz / max(1, $c1 - $c0)))")
        figures+=" $mode=$per_cpu"
    done
    read -r s1 t1 < <(steal_ticks)
    steal=$(python3 -c "print(round(100 * ($s1 - $s0) / max(1, $t1 - $t0), 1))")
    echo "$(date +%T) $probe$figures steal=$steal" | tee -a "$OUT"
done

python3 - "$OUT" <<'PY'
import statistics, sys
rows = [dict(kv.split("=") for kv in line.split()[1:]) for line in open(sys.argv[1])]
rows = [{k: float(v) for k, v in r.items()} for r in rows]
def corr(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy) if sx and sy else float("nan")
quiet = [r for r in rows if r["steal"] < 2]
print(f"\n{len(rows)} rounds, {len(quiet)} with steal under 2 %")
print(f"{'figure':10} {'min':>10} {'median':>10} {'max':>10}   r with closed (all, quiet)   r with open (all, quiet)")
for k in rows[0]:
    v = [r[k] for r in rows]
    rs = []
    for y in ("closed", "open"):
        rs.append(corr(v, [r[y] for r in rows]))
        rs.append(corr([r[k] for r in quiet], [r[y] for r in quiet]) if len(quiet) > 2 else float("nan"))
    print(f"{k:10} {min(v):10.1f} {statistics.median(v):10.1f} {max(v):10.1f}   {rs[0]:+6.2f} {rs[1]:+6.2f}                {rs[2]:+6.2f} {rs[3]:+6.2f}")
PY
