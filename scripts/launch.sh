#!/usr/bin/env bash
# Starts N local processes of one command for data-parallel training, the way torchrun does:
#   scripts/launch.sh -n N [--master-port P] [--master-addr A] -- CMD [ARGS...]
# Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
# its output lines are prefixed with "[rank i] ". When one process fails, the others get
# SIGTERM (SIGKILL 10 s later) and the script exits with the failed process's code; otherwise
# with 0 once all have finished. Ctrl-C / SIGTERM are passed on to every process.
set -u

usage() {
  echo "usage: $0 -n N [--master-port P] [--master-addr A] -- CMD [ARGS...]" >&2
  exit 2
}

n=""
port="${MASTER_PORT:-29500}"
addr="${MASTER_ADDR:-127.0.0.1}"
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nproc) [ $# -ge 2 ] || usage; n="$2"; shift 2 ;;
    --master-port) [ $# -ge 2 ] || usage; port="$2"; shift 2 ;;
    --master-addr) [ $# -ge 2 ] || usage; addr="$2"; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[ $# -gt 0 ] || usage
case "$n" in ''|*[!0-9]*|0) echo "launch.sh: -n needs a positive integer, got '$n'" >&2; exit 2 ;; esac
case "$port" in ''|*[!0-9]*) echo "launch.sh: bad port '$port'" >&2; exit 2 ;; esac

# setsid: each process leads its own process group (same pid), so stopping a rank also stops
# what it started (a shell's children).
pids=()
for ((i = 0; i < n; i++)); do
  # The command's own pid is $! (the prefixing runs in a process substitution).
  RANK=$i WORLD_SIZE=$n LOCAL_RANK=$i LOCAL_WORLD_SIZE=$n MASTER_ADDR=$addr MASTER_PORT=$port \
    setsid "$@" > >(sed -u "s/^/[rank $i] /") 2>&1 &
  pids+=($!)
done

stop_all() {
  local sig=$1
  for p in "${pids[@]}"; do kill -s "$sig" -- "-$p" 2>/dev/null; done
}
trap 'stop_all TERM' INT TERM

# Poll: the first process to fail decides the exit code.
status=0
stopped_at=
left=$n
declare -A done_
while [ "$left" -gt 0 ]; do
  for ((i = 0; i < n; i++)); do
    p=${pids[$i]}
    [ -n "${done_[$i]:-}" ] && continue
    kill -0 "$p" 2>/dev/null && continue
    wait "$p"
    code=$?
    done_[$i]=1
    left=$((left - 1))
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$code
      echo "launch.sh: rank $i exited with code $code; stopping the others" >&2
      stop_all TERM
      stopped_at=$SECONDS
    fi
  done
  if [ -n "$stopped_at" ] && [ $((SECONDS - stopped_at)) -ge 10 ]; then stop_all KILL; fi
  [ "$left" -gt 0 ] && sleep 0.2
done
exit "$status"
