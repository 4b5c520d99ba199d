#!/usr/bin/env bash
# Start a single-node Slurm on localhost (munged + slurmctld + slurmd), installing the Debian packages if needed.
# Idempotent: a second call finds the daemons running and only checks the node. Everything lives under one work
# folder ($SPARK_SLURM_DIR, default /var/tmp/spark-slurm); /etc/slurm/slurm.conf is linked to its config when that
# file does not exist yet (so sbatch/squeue work without SLURM_CONF), and every Slurm command run by spark also
# honours SLURM_CONF. Needs root (slurmd launches jobs as their user). Stop with scripts/slurm-down.sh.
#
# Environment: SPARK_SLURM_DIR, SLURM_CTLD_PORT (6817), SLURMD_PORT (6818), SPARK_SLURM_NO_INSTALL=1 (fail
# instead of apt-get), SPARK_SLURM_WAIT (seconds to wait for the node, default 30).
set -euo pipefail

W="${SPARK_SLURM_DIR:-/var/tmp/spark-slurm}"
CTLD_PORT="${SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"
WAIT="${SPARK_SLURM_WAIT:-30}"
CONF="$W/etc/slurm.conf"
SOCK="$W/munge/munge.sock"
export SLURM_CONF="$CONF"

step() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: error: %s\n' "$*" >&2; exit 1; }

# A pid file's process is alive: exists, not a zombie (PID 1 may reap lazily), and runs the expected program.
alive() { # pidfile comm
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
}

# the version without reading a config (sbatch --version would wait 60 s for a missing one)
slurm_version() { dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo '?'; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd has to launch jobs); got uid $(id -u)"

# 1. packages
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null && command -v mungekey >/dev/null; then
  step "packages: present (slurm $(slurm_version))"
else
  [ "${SPARK_SLURM_NO_INSTALL:-0}" = 1 ] && die "Slurm is not installed and SPARK_SLURM_NO_INSTALL=1"
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get to install it"
  step "packages: installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$(mktemp /tmp/slurm-up-apt.XXXXXX)" 2>&1 || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/tmp/slurm-up-apt-install.log 2>&1 ||
    die "apt-get install slurm-wlm munge failed (see /tmp/slurm-up-apt-install.log)"
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null || die "slurmctld/slurmd missing after install"
  step "packages: installed (slurm $(slurm_version))"
fi

# 2. work folder (the munge socket's folder and all its parents must be traversable by everyone)
mkdir -p "$W/etc" "$W/munge" "$W/log" "$W/run" "$W/spool/ctld" "$W/spool/d"
chmod 755 "$W" "$W/munge" "$W/etc" "$W/run" "$W/log"
step "work folder: $W"

# 3. munge
if [ ! -s "$W/munge/munge.key" ]; then
  mungekey --create --keyfile="$W/munge/munge.key" >/dev/null 2>&1 || die "mungekey --create failed"
  step "munge: key created"
fi
chmod 600 "$W/munge/munge.key"
if alive "$W/run/munged.pid" munged; then
  step "munge: munged already running (pid $(cat "$W/run/munged.pid"))"
else
  rm -f "$SOCK" "$SOCK.lock" "$W/run/munged.pid"
  munged --key-file="$W/munge/munge.key" --socket="$SOCK" --pid-file="$W/run/munged.pid" \
    --log-file="$W/log/munged.log" --seed-file="$W/munge/munged.seed" --origin=127.0.0.1 ||
    die "munged failed to start (see $W/log/munged.log)"
  step "munge: munged started (pid $(cat "$W/run/munged.pid" 2>/dev/null || echo '?'))"
fi
for _ in $(seq 1 50); do
  munge -n --socket="$SOCK" 2>/dev/null | unmunge --socket="$SOCK" >/dev/null 2>&1 && break
  sleep 0.1
done
munge -n --socket="$SOCK" 2>/dev/null | unmunge --socket="$SOCK" >/dev/null 2>&1 || die "munge credential round trip failed (see $W/log/munged.log)"
step "munge: credentials round-trip"

# 4. slurm.conf with this machine's real CPUs / memory (slurmd -C runs without a config)
NODE_LINE="$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1)" || true
[ -n "$NODE_LINE" ] || die "slurmd -C did not report the node's hardware"
NODE_HW="$(printf '%s\n' "$NODE_LINE" | sed -e 's/^NodeName=[^ ]* //')"
cat >"$CONF.new" <<EOF
# written by spark scripts/slurm-up.sh: single-node Slurm on localhost
ClusterName=spark
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$W/spool/ctld
SlurmdSpoolDir=$W/spool/d
SlurmctldPidFile=$W/run/slurmctld.pid
SlurmdPidFile=$W/run/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$W/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
KillWait=2
MinJobAge=300
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
CONF_CHANGED=0
if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
  rm -f "$CONF.new"
else
  mv -f "$CONF.new" "$CONF"
  CONF_CHANGED=1
fi
chmod 644 "$CONF"
step "config: $CONF ($NODE_HW)"
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)" = "$CONF" ]; then
  mkdir -p /etc/slurm
  ln -sfn "$CONF" /etc/slurm/slurm.conf
  step "config: /etc/slurm/slurm.conf -> $CONF"
else
  step "config: /etc/slurm/slurm.conf belongs to another setup; export SLURM_CONF=$CONF"
fi

# 5. daemons (they fork and write their pid files)
if [ "$CONF_CHANGED" = 1 ] && { alive "$W/run/slurmctld.pid" slurmctld || alive "$W/run/slurmd.pid" slurmd; }; then
  step "config changed: restarting the daemons"
  for d in slurmd slurmctld; do
    alive "$W/run/$d.pid" "$d" && kill "$(cat "$W/run/$d.pid")" 2>/dev/null || true
  done
  sleep 1
fi
if alive "$W/run/slurmctld.pid" slurmctld; then
  step "slurmctld: already running (pid $(cat "$W/run/slurmctld.pid"))"
else
  rm -f "$W/run/slurmctld.pid"
  slurmctld -f "$CONF" >>"$W/log/slurmctld.out" 2>&1 || die "slurmctld failed to start (see $W/log/slurmctld.log)"
  step "slurmctld: started"
fi
if alive "$W/run/slurmd.pid" slurmd; then
  step "slurmd: already running (pid $(cat "$W/run/slurmd.pid"))"
else
  rm -f "$W/run/slurmd.pid"
  slurmd -f "$CONF" -N localhost >>"$W/log/slurmd.out" 2>&1 || die "slurmd failed to start (see $W/log/slurmd.log)"
  step "slurmd: started"
fi

# 6. wait for the node
STATE=""
for _ in $(seq 1 $((WAIT * 5))); do
  STATE="$(sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1 || true)"
  case "$STATE" in
    idle | mixed | allocated | completing) break ;;
    down* | drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$STATE" in
  idle | mixed | allocated | completing) step "node: localhost is $STATE" ;;
  *) die "node localhost not ready after ${WAIT}s (state '${STATE:-unknown}'; see $W/log/slurmctld.log and $W/log/slurmd.log)" ;;
esac
step "ready: export SLURM_CONF=$CONF"
