#!/usr/bin/env bash
# Installs what the end-to-end tests need, outside the extension's own dependencies:
#   - Debian packages: chromium (the browser playwright-core drives), ripgrep, and the headers
#     code-server's native modules build against;
#   - code-server 4.99.4 (the real VS Code workbench; the last release that runs on Node 20) into
#     .cache/code-server (git-ignored, never part of package.json or the .vsix).
# Idempotent: when everything is in place it returns in well under a second.
# Usage: bash scripts/e2e/setup.sh        (root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/../.."

CS_VERSION=4.99.4
CS_DIR="$PWD/.cache/code-server"
CS_BIN="$CS_DIR/node_modules/.bin/code-server"

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v rg >/dev/null 2>&1 || need_apt+=(ripgrep)
for pkg in libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== e2e setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ -x "$CS_BIN" ] && grep -q "\"version\": \"$CS_VERSION\"" "$CS_DIR/node_modules/code-server/package.json" 2>/dev/null; then
  echo "== e2e setup: code-server $CS_VERSION present"
  exit 0
fi

# @vscode/ripgrep downloads rg from GitHub during install (unreachable offline). It looks in this
# cache first; a tarball holding Debian's /usr/bin/rg as `rg` satisfies it.
TMP="${TMPDIR:-/tmp}"
RG_CACHE="$TMP/vscode-ripgrep-cache-1.15.11"
RG_TAR="$RG_CACHE/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
if [ ! -f "$RG_TAR" ]; then
  mkdir -p "$RG_CACHE"
  stage="$(mktemp -d)"
  cp "$(command -v rg)" "$stage/rg"
  tar -czf "$RG_TAR" -C "$stage" rg
  rm -rf "$stage"
fi

echo "== e2e setup: npm install code-server@$CS_VERSION into $CS_DIR"
mkdir -p "$CS_DIR"
[ -f "$CS_DIR/package.json" ] || echo '{"name":"obr-e2e-code-server","private":true}' > "$CS_DIR/package.json"
(
  cd "$CS_DIR"
  npm_config_unsafe_perm=true npm_config_yes=true npm install --no-audit --no-fund --no-save \
    "code-server@$CS_VERSION" >install.log 2>&1 || { tail -40 install.log; exit 1; }
)
[ -x "$CS_BIN" ] || { echo "code-server did not install: $CS_BIN missing" >&2; exit 1; }
echo "== e2e setup: code-server $CS_VERSION installed"
