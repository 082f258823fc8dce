#!/usr/bin/env bash
# `make test-slurm`: the tests of tests/launch/slurm against a real one-node Slurm cluster.
#   tests/launch/slurm/run.sh PYTHON [pytest args...]
# Installs munge, slurmctld, slurmd and the client commands when missing (apt-get, as root; otherwise the tests
# skip, saying why), starts a private cluster under a temporary directory (cluster.sh), runs pytest with SLURM_CONF
# pointing at it, and stops every daemon it started, whatever the tests did (EXIT trap, also on Ctrl-C).
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
HERE=tests/launch/slurm
PY="${1:?usage: run.sh PYTHON [pytest args]}"
shift

TOOLS=(munged mungekey slurmctld slurmd sbatch srun scontrol scancel sinfo squeue)
PACKAGES=(munge slurmctld slurmd slurm-client)

missing() { for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done; }

install() {
    # policy-rc.d keeps the packages' init scripts from starting system-wide munged/slurmd while they install.
    local policy=/usr/sbin/policy-rc.d made=0 rc
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made=1; fi
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${PACKAGES[@]}")
    "${apt[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && "${apt[@]}" >/dev/null 2>&1; }
    rc=$?
    if [ "$made" = 1 ]; then rm -f "$policy"; fi
    return $rc
}

SKIP=""
if [ -n "$(missing)" ]; then
    if [ "$(id -u)" != 0 ]; then
        SKIP="Slurm is not installed ($(missing | tr '\n' ' ')missing) and installing it needs root: run as root, or apt-get install ${PACKAGES[*]}"
    elif ! command -v apt-get >/dev/null 2>&1; then
        SKIP="Slurm is not installed ($(missing | tr '\n' ' ')missing) and there is no apt-get: install Slurm >= 22.05 with munge"
    else
        echo "== installing ${PACKAGES[*]} (apt-get)"
        start=$SECONDS
        if install && [ -z "$(missing)" ]; then
            echo "== installed in $((SECONDS - start)) s"
        else
            SKIP="apt-get install ${PACKAGES[*]} failed: the real-Slurm tests cannot run here"
        fi
    fi
elif [ "$(id -u)" != 0 ]; then
    SKIP="the test cluster's slurmd must run as root (it starts jobs as their users): run make test-slurm as root"
fi

if [ -n "$SKIP" ]; then
    echo "== test-slurm: $SKIP"
    export OCTO_SLURM_SKIP="$SKIP"
    exec "$PY" -m pytest "$HERE" -q -rs "$@"
fi

DIR="$(mktemp -d "${TMPDIR:-/tmp}/octo-slurm.XXXXXX")"
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
    "$HERE/cluster.sh" stop "$DIR"
    rm -rf "$DIR"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$HERE/cluster.sh" start "$DIR" || exit 1
export SLURM_CONF="$DIR/slurm.conf"
export OCTO_SLURM_CONF="$SLURM_CONF"
# The jobs' run directories live under DIR (pytest's shared temporary root is pruned by other pytest runs).
"$PY" -m pytest "$HERE" -q -rs --basetemp "$DIR/pytest" "$@"
rc=$?
if [ "$rc" != 0 ]; then
    KEEP="$(mktemp -d "${TMPDIR:-/tmp}/octo-slurm-failed.XXXXXX")"
    cp -r "$DIR/pytest" "$DIR/log" "$DIR/slurm.conf" "$KEEP/" 2>/dev/null
    echo "== tests failed: the jobs' run directories and the cluster's logs are kept in $KEEP"
fi
exit "$rc"
