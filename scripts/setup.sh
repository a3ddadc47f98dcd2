#!/usr/bin/env bash
# One-step set-up on a fresh Debian 12 machine (idempotent): Debian packages, npm dependencies
# (Node 24 comes from the npm registry as the `node` package), the TypeScript build, the static
# guest agent, the guest kernel and the default environment. Then, unless --no-run, the main job:
#   pyro run debian:12 -- git --version
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
for arg in "$@"; do
  case "$arg" in
    --no-run) run_main=0 ;;
    *) echo "usage: scripts/setup.sh [--no-run]" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# docker-registry and apache2-utils (htpasswd) serve the registry tests on 127.0.0.1; socat joins each
# guest connection to the egress proxy (one small process per connection).
APT_PACKAGES=(qemu-system-x86 qemu-utils socat mmdebstrap e2fsprogs bubblewrap lz4 cpio busybox-static util-linux ca-certificates xz-utils docker-registry apache2-utils)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The agent is Rust std-only: Debian's cargo is enough where rustup's is absent.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  missing+=(cargo rustc)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The guest kernel is fetched with `apt-get download`, which needs current package lists.
if [ -z "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -1)" ]; then $SUDO apt-get update -qq; fi

echo "[setup] npm dependencies"
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
NODE="$PWD/node_modules/.bin/node"
echo "[setup] node $("$NODE" --version) (from the npm registry)"

echo "[setup] guest agent (Rust, static)"
CARGO="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
(cd guest/agent && "$CARGO" build --release --quiet)
echo "[setup] private-ram-discard (Rust, preloaded into QEMU: freed pages of copy-on-write VMs go back to the host)"
(cd host/private-ram-discard && "$CARGO" build --release --quiet)

echo "[setup] TypeScript build"
"$NODE" node_modules/typescript/bin/tsc -p tsconfig.json

echo "[setup] guest kernel and default environment"
# The catalog's registry artifact when reachable, else a local mmdebstrap build (it says which).
"$NODE" dist/src/cli/main.js env pull debian:12

if [ "$run_main" -eq 1 ]; then
  echo "[setup] main job: pyro run debian:12 -- git --version"
  "$NODE" dist/src/cli/main.js run debian:12 -- git --version
fi
