#!/usr/bin/env bash
# Requests per server CPU-second on /hello: serverlab's lean architectures
# against nginx with one worker, alternating the contestants rep by rep so
# that drift on a noisy machine hits them alike. Each server runs alone on
# SERVER_CPU; the load (closed loop, CONNS keep-alive connections, one
# generator thread) runs on GEN_CPU. Server CPU is the server's user+system
# time (/proc/PID/stat, its children included) over the run.
#
# Usage: bench/lean_compare.sh
# Environment (defaults): ARCHS="event-loop reactor-per-core" CONNS=64
#   DURATION=5s REPS=5 GEN_CPU=0 SERVER_CPU=1
#   SERVERLAB=target/release/serverlab (build it: cargo build --release)
#   BEFORE=path/to/an/older/serverlab (optional: each architecture also
#   runs from it, as ARCH@before, for a before/after comparison)
# Needs: taskset, jq, nginx (apt-get install nginx-light).
set -euo pipefail

ARCHS=${ARCHS:-event-loop reactor-per-core}
CONNS=${CONNS:-64}
DURATION=${DURATION:-5s}
REPS=${REPS:-5}
GEN_CPU=${GEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
SERVERLAB=${SERVERLAB:-target/release/serverlab}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

source "$(dirname "$0")/lib.sh"
need taskset jq "$SERVERLAB" "$NGINX"
scratch lean

# CPU ticks (user + system) of a server: the process, its reaped children
# (process-per-request) and its live ones (prefork).
ticks() {
    local total
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat")
    for child in $(pgrep -P "$1" || true); do
        total=$(( total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A url server_pid
contestants=$ARCHS
if [[ -n ${BEFORE:-} ]]; then
    for arch in $ARCHS; do contestants+=" $arch@before"; done
fi
for arch in $contestants; do
    bin=$SERVERLAB
    [[ $arch == *@before ]] && bin=$BEFORE
    serve_on "$arch" "$SERVER_CPU" "$bin" --arch "${arch%@before}" --workers 1
    server_pid[$arch]=$served_pid
    url[$arch]="http://$addr/hello"
done

port=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /hello { default_type text/plain; return 200 "Hello, World!"; }
    }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e stderr 2>"$tmp/nginx.err" &
pids+=($!)
for _ in $(seq 100); do
    worker=$(pgrep -P "${pids[-1]}" || true)
    [[ -n $worker ]] && break
    sleep 0.05
done
[[ -n $worker ]] || { echo "nginx did not start:" >&2; cat "$tmp/nginx.err" >&2; exit 1; }
url[nginx]="http://127.0.0.1:$port/hello"
server_pid[nginx]=$worker

echo "servers on cpu $SERVER_CPU (1 worker each); generator: serverlab load, 1 thread on cpu $GEN_CPU, $CONNS connections, $DURATION a run, $REPS reps, alternating"
printf '%-18s %4s %10s %14s\n' server rep "req/s" "req/CPU-s"
for rep in $(seq "$REPS"); do
    for s in $contestants nginx; do
        pid=${server_pid[$s]}
        before=$(ticks "$pid")
        taskset -c "$GEN_CPU" "$SERVERLAB" load -t 1 -c "$CONNS" -d "$DURATION" --json "${url[$s]}" >"$tmp/out.json"
        after=$(ticks "$pid")
        jq -r --arg s "$s" --arg r "$rep" --argjson cpu "$(( after - before ))" --argjson hz "$hz" \
            '[$s, $r, (.statuses.s2xx), (.statuses.s2xx / .duration_s | floor),
              (if $cpu > 0 then (.statuses.s2xx / ($cpu / $hz) | floor) else "n/a" end)] | @tsv' "$tmp/out.json" |
            awk -F'\t' '{printf "%-18s %4s %10s %14s\n", $1, $2, $4, $5}'
    done
done
