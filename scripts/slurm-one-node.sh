#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, for trying profiles/slurm and for CI.
#
#   sudo scripts/slurm-one-node.sh start    # install slurm-wlm + munge if needed, configure, start
#   sudo scripts/slurm-one-node.sh status   # sinfo
#   sudo scripts/slurm-one-node.sh stop     # stop the daemons this script started
#
# Partitions `cpu` (default) and `gpu` on the same node, the gpu one with one GPU
# declared as a generic resource (/dev/null as its device: jobs asking for `gpu: 1`
# are scheduled, they do not get a real GPU). No accounting database: status polling
# goes through squeue, so finished jobs stay visible for MinJobAge = 600 s.
# Needs root (it writes /etc/slurm and starts munged, slurmctld and slurmd directly,
# without systemd). Exit status 0 once `sinfo` shows the node idle, 1 otherwise.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "slurm-one-node: run as root (it configures and starts system daemons)" >&2
        exit 1
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
}

write_config() {
    local host cpus mem_mb
    host=$(hostname -s)
    # The node advertises at least 8 CPUs and 32 GB, whatever the machine has
    # (SlurmdParameters=config_overrides): the profile's cluster-sized requests
    # (sample_md: 4 threads, train_*: 16 GB, groups of several jobs) must be schedulable
    # on a 2-core CI machine, where a job asking for more than the node has would wait
    # in the queue forever. Jobs then share the real cores; nothing enforces memory.
    cpus=$(( $(nproc) > 8 ? $(nproc) : 8 ))
    mem_mb=$(awk '/MemTotal/ {m = int($2 / 1024) - 1024; print (m > 32000 ? m : 32000)}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
    chown slurm:slurm "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
    cat > "$CONF_DIR/slurm.conf" <<EOF
# written by scripts/slurm-one-node.sh
ClusterName=onenode
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# no cgroups in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
# no accounting database: finished jobs stay in squeue for 10 minutes (status polling)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    cat > "$CONF_DIR/gres.conf" <<EOF
# one stand-in GPU (/dev/null as its device file): enough to schedule gpu jobs
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
EOF
}

start_munge() {
    if pgrep -x munged >/dev/null; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- munged
}

start() {
    require_root
    install_packages
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    local host state
    host=$(hostname -s)
    for _ in $(seq 60); do
        state=$(sinfo -h -N -n "$host" -o "%t" 2>/dev/null | head -n 1)
        case "$state" in
            idle|mix|alloc) sinfo; return 0 ;;
            # drained or down in a state saved by an earlier, misconfigured start
            drain*|down*|inval*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    echo "slurm-one-node: the node did not become idle within 60 s" >&2
    sinfo -N -l >&2 || true
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    return 1
}

stop() {
    require_root
    for daemon in slurmd slurmctld; do
        if [ -s "$RUN_DIR/$daemon.pid" ]; then
            kill "$(cat "$RUN_DIR/$daemon.pid")" 2>/dev/null || true
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
