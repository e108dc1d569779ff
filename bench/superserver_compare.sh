#!/usr/bin/env bash
# What starting a service per connection costs: serverlab's super server
# against xinetd and systemd-socket-activate on the same tiny nowait service
# (a static C program that reads the request and writes a 13-byte answer),
# plus serverlab's built-in `hello` (no process at all) and a `wait` service
# (one thread-pool server that accepts by itself). Connection-per-request
# load (`serverlab load --no-keepalive`, closed loop), the launchers and
# everything they start on SERVER_CPU, the generator on GEN_CPU, the
# contestants alternating rep by rep. CPU is all the busy time of
# SERVER_CPU over the run (user, system, irq and softirq from /proc/stat):
# what the launcher, the processes it starts and the kernel's work for
# them cost, which per-process times undercount (a process's exec and
# teardown are partly charged elsewhere).
#
# Usage: bench/superserver_compare.sh
# Environment (defaults): CONNS=8 DURATION=4s REPS=3 GEN_CPU=0 SERVER_CPU=1
#   SERVERLAB=target/release/serverlab (build it: cargo build --release)
# Needs: taskset, jq, cc, xinetd, systemd-socket-activate
#   (apt-get install xinetd systemd gcc jq).
set -euo pipefail

CONNS=${CONNS:-8}
DURATION=${DURATION:-4s}
REPS=${REPS:-3}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
SERVERLAB=$(realpath "${SERVERLAB:-target/release/serverlab}")
XINETD=$(command -v xinetd || echo /usr/sbin/xinetd)

source "$(dirname "$0")/lib.sh"
need taskset jq cc "$SERVERLAB" "$XINETD" systemd-socket-activate
scratch super

# The service every launcher starts: read the request, answer, exit.
cat >"$tmp/hello.c" <<'C'
#include <unistd.h>
int main(void) {
    static const char answer[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
    char request[4096];
    if (read(0, request, sizeof request) <= 0) return 1;
    return write(1, answer, sizeof answer - 1) == sizeof answer - 1 ? 0 : 1;
}
C
cc -O2 -static -o "$tmp/hello" "$tmp/hello.c" 2>/dev/null || cc -O2 -o "$tmp/hello" "$tmp/hello.c"

# Busy ticks of SERVER_CPU so far.
busy() {
    awk -v cpu="cpu$SERVER_CPU" '$1 == cpu {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}
hz=$(getconf CLK_TCK)

declare -A port
p_now=$(free_port) p_hello=$(free_port) p_wait=$(free_port)
cat >"$tmp/super.toml" <<TOML
[[service]]
name = "nowait"
listen = ["127.0.0.1:$p_now"]
command = ["$tmp/hello"]

[[service]]
name = "builtin"
listen = ["127.0.0.1:$p_hello"]
builtin = "hello"

[[service]]
name = "wait"
listen = ["127.0.0.1:$p_wait"]
mode = "wait"
command = ["$SERVERLAB", "serve", "--arch", "thread-pool", "--workers", "4"]
TOML
taskset -c "$SERVER_CPU" "$SERVERLAB" superserver "$tmp/super.toml" >"$tmp/super.out" 2>"$tmp/super.err" &
pids+=($!)
port[serverlab-nowait]=$p_now port[serverlab-builtin]=$p_hello port[serverlab-wait]=$p_wait

p_x=$(free_port)
cat >"$tmp/xinetd.conf" <<CONF
defaults
{
    instances = UNLIMITED
    per_source = UNLIMITED
    cps = 1000000 1
}
service hello
{
    type = UNLISTED
    port = $p_x
    bind = 127.0.0.1
    socket_type = stream
    protocol = tcp
    wait = no
    user = root
    server = $tmp/hello
    instances = UNLIMITED
    per_source = UNLIMITED
    cps = 1000000 1
    log_on_success =
    log_on_failure =
}
CONF
taskset -c "$SERVER_CPU" "$XINETD" -dontfork -stayalive -f "$tmp/xinetd.conf" -pidfile "$tmp/xinetd.pid" 2>"$tmp/xinetd.err" &
pids+=($!)
port[xinetd]=$p_x

p_s=$(free_port)
taskset -c "$SERVER_CPU" systemd-socket-activate --inetd -a -l "127.0.0.1:$p_s" "$tmp/hello" 2>"$tmp/ssa.err" &
pids+=($!)
port[systemd-socket-activate]=$p_s

contestants="serverlab-nowait xinetd systemd-socket-activate serverlab-builtin serverlab-wait"
for c in $contestants; do wait_port "${port[$c]}"; done

echo "launchers on cpu $SERVER_CPU; generator: serverlab load --no-keepalive, 1 thread on cpu $GEN_CPU, $CONNS connections, $DURATION a run, $REPS reps, alternating"
printf '%-24s %4s %12s %14s %8s\n' launcher rep "conn/s" "CPU µs/conn" errors
for rep in $(seq "$REPS"); do
    for c in $contestants; do
        before=$(busy)
        taskset -c "$GEN_CPU" "$SERVERLAB" load --no-keepalive -t 1 -c "$CONNS" -d "$DURATION" --json \
            "http://127.0.0.1:${port[$c]}/hello" >"$tmp/out.json"
        after=$(busy)
        jq -r --arg c "$c" --arg r "$rep" --argjson cpu "$(( after - before ))" --argjson hz "$hz" \
            '[$c, $r, (.statuses.s2xx / .duration_s | floor),
              (if .statuses.s2xx > 0 then ($cpu / $hz * 1e6 / .statuses.s2xx | floor) else "n/a" end),
              ([.errors[]?] | add // 0)] | @tsv' "$tmp/out.json" |
            awk -F'\t' '{printf "%-24s %4s %12s %14s %8s\n", $1, $2, $3, $4, $5}'
    done
done
