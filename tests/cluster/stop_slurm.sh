#!/usr/bin/env bash
# Stop the private SLURM started by tests/cluster/setup_slurm.sh DIR: slurmd, slurmctld, munged, by the PIDs
# recorded under DIR (never by name), waiting for each to exit; then remove the pid files (slurmctld cannot).
set -uo pipefail
DIR=${1:?usage: stop_slurm.sh STATE_DIR}
stop_pid() {  # name pidfile
    local pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(tr -dc 0-9 < "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$1 (pid $pid) ignored SIGTERM for 10 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}
stop_pid slurmd "$DIR/slurmd.pid"
stop_pid slurmctld "$DIR/slurmctld.pid"
stop_pid munged "$DIR/munge/munged.pid"
rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
exit 0
