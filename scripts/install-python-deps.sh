#!/usr/bin/env bash
# Install Python packages into a venv (run by `make venv` and `make demo`): usage PYTHON PIP-ARGS...
#
# With uv when it can be had (PATH, else `pip install uv` into the venv): it downloads and installs in
# parallel, several times faster than pip on a fresh machine. Plain pip when uv cannot be had or fails.
# uv reads no pip.conf; its TLS trusts the system's CA store (UV_NATIVE_TLS=1: a proxy with its own CA).
set -euo pipefail
py=$1
shift

uv=()
if command -v uv >/dev/null 2>&1; then
    uv=(uv)
elif "$py" -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1; then
    uv=("$py" -m uv)
fi
if ((${#uv[@]})); then
    if UV_NATIVE_TLS=${UV_NATIVE_TLS:-1} "${uv[@]}" pip install --quiet --python "$py" "$@"; then
        exit 0
    fi
    echo "install-python-deps: uv failed (above); installing with pip" >&2
fi
exec "$py" -m pip install --quiet "$@"
