#!/usr/bin/env bash
# Install the Debian packages the test suite needs (run by `make test`).
#
# Idempotent and cheap when nothing is missing: packages already installed are
# skipped without touching the network, so a second run takes well under 1 s.
# Services are NOT started: the tests start their own throw-away servers.
#
# To add a dependency, append its Debian package name to PACKAGES below.
set -euo pipefail

# Debian packages needed by the test suite, one per line.
PACKAGES=(
    postgresql # server (initdb, pg_ctl, postgres) + client; tests/fixtures/postgres.py
    slurm-wlm      # slurmctld, slurmd, sbatch/squeue/scontrol/scancel; tests/fixtures/slurm.py
    munge          # Slurm's authentication daemon (munged); tests/fixtures/slurm.py
    openssh-server # sshd for the SSH step operator tests; tests/fixtures/sshd.py
    python3-venv   # the remote Python of the SSH tests (Debian's interpreter); tests/fixtures/sshd.py
    podman         # Docker-compatible engine for the Docker step operator tests; tests/fixtures/podman.py
    runc           # podman's OCI runtime here (crun's defaults fail); tests/fixtures/podman.py
    debootstrap    # builds the base image offline from the apt mirror; tests/fixtures/podman.py
    catatonit      # podman's init process (containers run with init=True); tests/fixtures/podman.py
    docker-registry # the CNCF Distribution registry images are pushed to and pulled from; tests/fixtures/registry.py
    apache2-utils  # htpasswd (bcrypt) for the registry with basic auth; tests/fixtures/registry.py
    openjdk-17-jre-headless # Java for spark-submit and the standalone master/worker; tests/fixtures/spark_cluster.py
    bsdutils       # util-linux `script`: runs a pipeline under a pseudo-terminal; tests/test_terminal_logs.py
    chromium       # the headless browser the dashboard tests drive through Playwright; tests/fixtures/browser.py
    fonts-dejavu-core # a font for headless Chromium's text (the dashboard screenshots); tests/fixtures/browser.py
)

is_installed() {
    # The "Status:" field of `dpkg -s`; only "install ok installed" counts (a removed
    # but not purged package is still known to dpkg). No pipe: safe under pipefail.
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "install-system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-system-deps: re-run as root (sudo bash $0) or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# Keep maintainer scripts from starting services (e.g. the packaged PostgreSQL
# cluster): policy-rc.d exiting 101 means "action forbidden". Respect an
# existing policy file and remove only the one we created.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

echo "install-system-deps: installed ${missing[*]}"
