#!/usr/bin/env bash
# Installs the third-party LibreTranslate clients that tests/libretranslate_clients.rs
# runs against the gateway: the PyPI ones (tests/clients/requirements.txt, every
# version pinned) into a virtualenv, the npm one (tests/clients/package-lock.json)
# with `npm ci`. Into a cache outside the clone, TW_LT_CLIENTS_DIR (default
# ~/.cache/translation-worker/lt-clients); idempotent: a stamp of the pinned lists
# makes a warm run a no-op. Fails loudly (non-zero, with the reason) when a registry
# or a tool is missing: the test that needs the clients must not pass without them.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${TW_LT_CLIENTS_DIR:-$HOME/.cache/translation-worker/lt-clients}"
stamp="$dir/.stamp"
want="$(cat tests/clients/requirements.txt tests/clients/package.json tests/clients/package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -x "$dir/venv/bin/python" ] && [ -d "$dir/node/node_modules/libretranslate" ]; then
  exit 0
fi
for tool in python3 node npm; do
  command -v "$tool" >/dev/null || { echo "lt-clients: $tool is not installed" >&2; exit 1; }
done
echo "lt-clients: installing the LibreTranslate client libraries into $dir" >&2
rm -rf "$dir"
mkdir -p "$dir/node"
python3 -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -r tests/clients/requirements.txt
cp tests/clients/package.json tests/clients/package-lock.json "$dir/node/"
(cd "$dir/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
# Both must import before the stamp says so.
"$dir/venv/bin/python" -c "import libretranslatepy, libretranslate_aio"
(cd "$dir/node" && node -e "require('libretranslate')")
echo "$want" >"$stamp"
