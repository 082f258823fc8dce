#!/usr/bin/env bash
# A one-node Slurm cluster for tests, owned by whoever starts it: every file under DIR, every daemon stopped by pid.
#   cluster.sh start DIR   write DIR/slurm.conf for this host, start munged, slurmctld and slurmd, wait for idle
#   cluster.sh stop DIR    cancel the cluster's jobs, stop its daemons (pids recorded by start), then any process
#                          still carrying this cluster's SLURM_CONF (job steps outlive slurmd)
#   cluster.sh env DIR     print the exports the client commands need (SLURM_CONF)
# Needs root (slurmd runs jobs as their submitting user) and Slurm >= 22.05 with munge (Debian: munge slurmctld
# slurmd slurm-client). Ports are picked free at start. Nothing outside DIR is written or started.
set -uo pipefail

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

write_conf() {
    local dir="$1" host node ctld_port slurmd_port
    host="$(hostname -s)"
    # slurmd -C reports this host as Slurm sees it (CPUs, sockets, cores, threads, RealMemory): a node line that
    # differs from it makes slurmd drain the node.
    node="$(slurmd -C | head -n 1)"
    [[ "$node" == NodeName=* ]] || die "slurmd -C did not describe this host: $node"
    ctld_port="$(free_port)"
    slurmd_port="$(free_port)"
    cat > "$dir/slurm.conf" <<CONF
# One-node test cluster written by tests/launch/slurm/cluster.sh; everything lives under $dir.
ClusterName=octotest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
ReturnToService=2
# Finished jobs stay visible to scontrol for two minutes (the tests read their final state).
MinJobAge=120
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its limit (default 30): room for ranks
# on a busy machine to save, exit, and for the job script to decide about a requeue.
KillWait=60
SlurmctldTimeout=30
SlurmdTimeout=60
$node
PartitionName=debug Nodes=${node%% *} Default=YES MaxTime=INFINITE State=UP
CONF
    sed -i "s/^NodeName=[^ ]*/NodeName=$host/; /^UpTime=/d" "$dir/slurm.conf"
    sed -i "s/Nodes=NodeName=[^ ]*/Nodes=$host/" "$dir/slurm.conf"
}

start_daemon() {  # name, then the command (foreground mode); records the pid in DIR/run/NAME.pid.started
    local dir="$1" name="$2"
    shift 2
    "$@" >> "$dir/log/$name.out" 2>&1 &
    echo $! > "$dir/run/$name.started"
}

start() {
    local dir="$1"
    [ "$(id -u)" = 0 ] || die "needs root (slurmd starts jobs as their users)"
    for tool in munged mungekey slurmctld slurmd sinfo sbatch; do
        command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install munge slurmctld slurmd slurm-client)"
    done
    mkdir -p "$dir"/{munge,key,state,spool,run,log}
    # munged wants its socket's directories searchable by all, and its key readable by root only.
    chmod 755 "$dir" "$dir/munge"
    chmod 700 "$dir/key"
    write_conf "$dir"
    mungekey --create --keyfile="$dir/key/munge.key" --force || die "mungekey failed"
    chmod 600 "$dir/key/munge.key"
    start_daemon "$dir" munged munged --foreground --socket="$dir/munge/munge.socket" \
        --key-file="$dir/key/munge.key" --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/key/munged.seed"
    for _ in $(seq 50); do [ -S "$dir/munge/munge.socket" ] && break; sleep 0.1; done
    [ -S "$dir/munge/munge.socket" ] || { cat "$dir/log/munged.out" "$dir/log/munged.log" >&2 2>/dev/null; die "munged did not start"; }
    export SLURM_CONF="$dir/slurm.conf"
    start_daemon "$dir" slurmctld slurmctld -D -i -f "$SLURM_CONF"
    start_daemon "$dir" slurmd slurmd -D -f "$SLURM_CONF"
    local state=""
    for _ in $(seq 120); do
        state="$(sinfo -h -o %t 2>/dev/null | head -n 1)"
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null
        die "the node is not idle after 60 s (state: ${state:-no answer}); logs above"
    fi
    echo "cluster.sh: $(sinfo --version) up under $dir ($(sinfo -h -o '%N: %c CPUs, %m MB' | head -n 1))"
}

stop_pid() {  # pid file, then TERM, wait up to 10 s, KILL
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

marked_pids() {  # processes whose environment names this cluster's slurm.conf (job steps and their ranks)
    local conf="$1" environ pid
    for environ in /proc/[0-9]*/environ; do
        pid="${environ#/proc/}"
        pid="${pid%/environ}"
        [ "$pid" = $$ ] && continue
        if { tr '\0' '\n' < "$environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf"; then echo "$pid"; fi
    done
}

stop() {
    local dir="$1" conf pid
    conf="$dir/slurm.conf"
    [ -f "$conf" ] || return 0
    export SLURM_CONF="$conf"
    if [ -f "$dir/run/slurmctld.started" ] && kill -0 "$(cat "$dir/run/slurmctld.started")" 2>/dev/null; then
        scancel --full --quiet --user=root 2>/dev/null
        for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    stop_pid "$dir/run/slurmd.started"
    stop_pid "$dir/run/slurmctld.started"
    stop_pid "$dir/run/munged.started"
    for pid in $(marked_pids "$conf"); do kill -KILL "$pid" 2>/dev/null && echo "cluster.sh: killed leftover $pid"; done
    return 0
}

case "${1:-}" in
    start) [ $# = 2 ] || die "usage: cluster.sh start DIR"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: cluster.sh stop DIR"; stop "$2" ;;
    env) [ $# = 2 ] || die "usage: cluster.sh env DIR"; echo "export SLURM_CONF=$2/slurm.conf" ;;
    *) die "usage: cluster.sh {start|stop|env} DIR" ;;
esac
