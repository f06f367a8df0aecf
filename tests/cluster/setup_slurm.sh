#!/usr/bin/env bash
# Stand up a private single-node SLURM on localhost for the cluster tests (README: running on a cluster).
#
#   tests/cluster/setup_slurm.sh DIR      start munged + slurmctld + slurmd; state, logs, pid files under DIR
#   tests/cluster/stop_slurm.sh  DIR      stop them again (by the PIDs recorded in DIR)
#
# Needs root and Debian's packages (apt-get install slurm-wlm munge, or slurmctld slurmd slurm-client munge).
# Nothing outside DIR is touched: the munge socket, key, slurm.conf, spool and state all live there, the daemons
# listen on free ports, so a system SLURM or a second test cluster can run beside it. On success DIR/env holds
#   SLURM_CONF=DIR/etc/slurm.conf   (every SLURM client reads it: export it before sbatch/squeue/snakemake)
#   PRUNELAB_SLURM_BIN=DIR/bin      (put it first in PATH: an srun that keeps SLURM_CONF, see below)
#   PRUNELAB_SLURM_PARTITION=...    PRUNELAB_SLURM_NODE=...   PRUNELAB_SLURM_GPUS=...
# The node advertises PRUNELAB_SLURM_GPUS (default 2) `gpu` GRES backed by aliases of /dev/null, so that the
# profile's `--gpus=1` requests are scheduled as on a GPU cluster (jobs get CUDA_VISIBLE_DEVICES, find no CUDA
# device and run on CPU).
# Exit status: 0 = running and the node idle; 2 = cannot run here (not root, packages missing), reason on stderr;
# 1 = failed to start (logs under DIR/log).
set -euo pipefail

DIR=${1:?usage: setup_slurm.sh STATE_DIR}
GPUS=${PRUNELAB_SLURM_GPUS:-2}
PARTITION=${PRUNELAB_SLURM_PARTITION:-prunelab}
WAIT_S=${PRUNELAB_SLURM_WAIT_S:-60}

skip() { echo "SKIP: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || skip "needs root to start munged/slurmctld/slurmd"
for exe in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || \
        skip "SLURM not installed ($exe missing; apt-get install slurm-wlm munge)"
done
export PATH="$PATH:/usr/sbin"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# munged refuses group/world-writable paths and the munge user must reach its folder.
chmod 755 "$DIR"
mkdir -p "$DIR/etc" "$DIR/log" "$DIR/state" "$DIR/spool/slurmd" "$DIR/munge"
chmod 755 "$DIR/etc" "$DIR/log" "$DIR/state" "$DIR/spool" "$DIR/spool/slurmd"
# from here on, a failure stops whatever was started
trap 'rc=$?; [ $rc = 0 ] || bash "$(dirname "$0")/stop_slurm.sh" "$DIR"; exit $rc' EXIT
chown munge:munge "$DIR/munge" && chmod 755 "$DIR/munge"   # root clients reach the socket; the key is 0400

# ---- munge: private key and socket
if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$DIR/munge/munge.key" && chmod 400 "$DIR/munge/munge.key"
SOCK="$DIR/munge/munge.socket"
runuser -u munge -- munged --force --socket="$SOCK" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "munged did not start; see $DIR/munge/munged.log" >&2; exit 1; }
for _ in $(seq 50); do [ -s "$DIR/munge/munged.pid" ] && break; sleep 0.1; done

# ---- slurm.conf for one node with this machine's CPUs and memory
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=${PRUNELAB_SLURMCTLD_PORT:-$(free_port)}
SLURMD_PORT=${PRUNELAB_SLURMD_PORT:-$(free_port)}
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || SLURMD_PORT=$(free_port)
NODE=$(hostname -s)
HW=$(slurmd -C | head -1)
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$HW")
BOARDS=$(sed -n 's/.* Boards=\([0-9]*\).*/\1/p' <<<"$HW")
SOCKETS=$(sed -n 's/.* SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$HW")
CORES=$(sed -n 's/.* CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$HW")
THREADS=$(sed -n 's/.* ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$HW")
MEM=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
MEM=$((MEM * 9 / 10))   # leave room for the OS: slurmd drains a node that reports less than configured
GRES_LINE=""; NODE_GRES=""
# slurmd drops file-less GPUs and wants character devices: make GPUS aliases of /dev/null (1:3) under DIR/dev.
# Where mknod is not allowed (an unprivileged container), the node has no GPU and DIR/env says GPUS=0.
if [ "$GPUS" -gt 0 ]; then
    mkdir -p "$DIR/dev"
    for i in $(seq 0 $((GPUS - 1))); do
        [ -c "$DIR/dev/gpu$i" ] || mknod "$DIR/dev/gpu$i" c 1 3 2>/dev/null || { GPUS=0; break; }
    done
fi
if [ "$GPUS" -gt 0 ]; then
    GRES_LINE="GresTypes=gpu"
    NODE_GRES="Gres=gpu:$GPUS"
    echo "NodeName=$NODE Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]" > "$DIR/etc/gres.conf"
else
    rm -f "$DIR/etc/gres.conf"
fi
cat > "$DIR/etc/slurm.conf" <<EOF
# written by tests/cluster/setup_slurm.sh: a private one-node cluster for PruneLab's tests
ClusterName=prunelab-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MpiDefault=none
MinJobAge=3600
ReturnToService=2
SlurmdTimeout=300
$GRES_LINE
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/etc/slurm.conf"

# snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every SLURM_* variable but the job ids from the
# environment of the `srun` it runs inside each job, SLURM_CONF included; a cluster configured through
# SLURM_CONF (this private one; real clusters use /etc/slurm or configless) then fails with "Could not establish
# a configuration source". DIR/bin/srun puts it back and runs the real srun: put DIR/bin first in PATH.
mkdir -p "$DIR/bin"
cat > "$DIR/bin/srun" <<EOS
#!/bin/sh
SLURM_CONF="$SLURM_CONF" exec $(command -v srun) "\$@"
EOS
chmod 755 "$DIR/bin/srun"

# ---- daemons: -i ignores state left by an earlier cluster in DIR
slurmctld -i -f "$SLURM_CONF"
for _ in $(seq 100); do [ -s "$DIR/slurmctld.pid" ] && break; sleep 0.1; done
slurmd -f "$SLURM_CONF" -N "$NODE"
for _ in $(seq 100); do [ -s "$DIR/slurmd.pid" ] && break; sleep 0.1; done
cat > "$DIR/env" <<EOF
SLURM_CONF=$SLURM_CONF
PRUNELAB_SLURM_BIN=$DIR/bin
PRUNELAB_SLURM_PARTITION=$PARTITION
PRUNELAB_SLURM_NODE=$NODE
PRUNELAB_SLURM_GPUS=$GPUS
PRUNELAB_SLURM_MEM_MB=$MEM
EOF

deadline=$((SECONDS + WAIT_S))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && { echo "SLURM up: node $NODE idle in partition $PARTITION ($DIR)"; exit 0; }
    sleep 0.5
done
echo "SLURM node $NODE not idle after ${WAIT_S}s (state '$state'); logs in $DIR/log" >&2
tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
exit 1
