#!/usr/bin/env bash
# Install the npm packages the test suite needs (run by `make test`, beside pip and apt): Azurite, the Azure
# Storage emulator the azure artifact store is tested against (tests/fixtures/azurite.py).
#
# Into a cache outside the checkout, shared by every checkout on the machine; idempotent and cheap when the
# pinned version is there already (no network). A fresh install takes ~50 s, in parallel with pip and apt.
# The directory: $CONVEYOR_NODE_DEPS, else ${XDG_CACHE_HOME:-~/.cache}/conveyor/node (tests/fixtures/azurite.py
# looks in the same place).
set -euo pipefail

# npm packages needed by the test suite, name@version, one per line.
PACKAGES=(
    azurite@3.37.0 # azurite-blob; tests/fixtures/azurite.py
)

dir=${CONVEYOR_NODE_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/conveyor/node}

installed_version() {
    # the "version" of node_modules/NAME/package.json, without starting node
    local manifest=$dir/node_modules/$1/package.json
    [[ -f $manifest ]] && sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$manifest" | head -n 1
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    [[ $(installed_version "${pkg%@*}" || true) == "${pkg##*@}" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "install-node-deps: all present in $dir (${PACKAGES[*]})"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-deps: npm not found; install Node.js >= 20 (Debian: apt-get install nodejs npm) and re-run" >&2
    exit 1
fi

mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "${missing[@]}" >/dev/null
echo "install-node-deps: installed ${missing[*]} into $dir"
