#!/usr/bin/env bash
# Stop the single-node Slurm that scripts/slurm-up.sh started: cancel its jobs, stop slurmd, slurmctld and munged
# (by their pid files), and as a last resort kill job processes that outlived slurmstepd. Idempotent.
set -uo pipefail

W="${SPARK_SLURM_DIR:-/var/tmp/spark-slurm}"
CONF="$W/etc/slurm.conf"
export SLURM_CONF="$CONF"

step() { printf 'slurm-down: %s\n' "$*"; }

alive_pid() { # pidfile comm → prints the pid when alive
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  printf '%s\n' "$pid"
}

stop() { # name pidfile
  local pid
  if pid="$(alive_pid "$2" "$1")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive_pid "$2" "$1" >/dev/null || break
      sleep 0.1
    done
    if alive_pid "$2" "$1" >/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      step "$1: killed (pid $pid)"
    else
      step "$1: stopped (pid $pid)"
    fi
  else
    step "$1: not running"
  fi
  rm -f "$2"
}

if [ ! -d "$W" ]; then
  step "nothing to stop ($W does not exist)"
  exit 0
fi

if [ -f "$CONF" ] && alive_pid "$W/run/slurmctld.pid" slurmctld >/dev/null; then
  JOBS="$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')"
  if [ -n "${JOBS// /}" ]; then
    # shellcheck disable=SC2086
    scancel $JOBS 2>/dev/null || true
    step "cancelled jobs: $JOBS"
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
fi

stop slurmd "$W/run/slurmd.pid"
stop slurmctld "$W/run/slurmctld.pid"

# job processes whose environment holds SLURM_JOB_ID and our SLURM_CONF (slurmstepd's orphans)
for env in /proc/[0-9]*/environ; do
  pid="${env#/proc/}"
  pid="${pid%/environ}"
  [ "$pid" = "$$" ] && continue
  vars="$({ tr '\0' '\n' <"$env"; } 2>/dev/null)" || continue
  if printf '%s\n' "$vars" | grep -qx "SLURM_CONF=$CONF" && printf '%s\n' "$vars" | grep -q '^SLURM_JOB_ID='; then
    kill -KILL "$pid" 2>/dev/null && step "killed leftover job process $pid"
  fi
done

stop munged "$W/run/munged.pid"
step "done"
