# What the comparison scripts under bench/ share: checking their tools, a
# scratch folder that goes away with every process they started (on exit,
# an error or Ctrl-C), free ports, and starting `serverlab serve`.
# Source it after `set -euo pipefail`:
#   source "$(dirname "$0")/lib.sh"

# need TOOL...: stops, naming the first one missing.
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
    done
}

# Every background process to kill at exit: append each `$!` here.
pids=()

# scratch NAME: a fresh folder in $tmp (/tmp/serverlab-NAME.XXXXXX),
# removed at exit after the processes in $pids are killed.
scratch() {
    tmp=$(mktemp -d "/tmp/serverlab-$1.XXXXXX")
    trap cleanup EXIT
    # Ctrl-C or a kill ends the script (the EXIT trap then cleans up)
    # instead of going on with the next measurement.
    trap 'exit 130' INT TERM
}

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s at most).
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# serve_on NAME CPU BIN ARGS...: `BIN serve ARGS --listen 127.0.0.1:0`
# pinned to CPU, its output in $tmp/NAME.out, until it says where it
# listens; sets `addr` (host:port) and `served_pid`.
serve_on() {
    local name=$1 cpu=$2 bin=$3
    shift 3
    taskset -c "$cpu" "$bin" serve "$@" --listen 127.0.0.1:0 >"$tmp/$name.out" 2>&1 &
    served_pid=$!
    pids+=("$served_pid")
    for _ in $(seq 100); do
        grep -q '^listening on' "$tmp/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    addr=$(awk '/^listening on/ {print $3; exit}' "$tmp/$name.out")
    [[ -n $addr ]] || { echo "$name did not start:" >&2; cat "$tmp/$name.out" >&2; exit 1; }
}
