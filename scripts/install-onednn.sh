#!/usr/bin/env bash
# Installs the prebuilt oneDNN 3.2 CPU library (GNU OpenMP build) from PyPI into a
# fixed prefix. CTranslate2 is linked against it when the `dnnl` feature (default)
# is on: building oneDNN from source takes far longer than the CI budget on 2 cores,
# and these wheels carry exactly `libdnnl.so.3` (needs only libgomp) plus headers.
#
# The prefix is fixed (not inside the clone) so that the CMake caches of CTranslate2
# inside a warm CARGO_TARGET_DIR keep pointing at the same files.
set -euo pipefail
ONEDNN_DIR="${ONEDNN_DIR:-/opt/translation-worker/onednn-2023.2.0}"
VERSION=2023.2.0
if [ -f "$ONEDNN_DIR/lib/libdnnl.so.3" ] && [ -f "$ONEDNN_DIR/include/oneapi/dnnl/dnnl.h" ]; then
  echo "oneDNN already installed in $ONEDNN_DIR"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required to fetch oneDNN from PyPI" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
  "onednn-cpu-gomp==$VERSION" "onednn-devel-cpu-gomp==$VERSION"
mkdir -p "$ONEDNN_DIR"
# A wheel is a zip; its `*.data/data/` tree is what pip would put under a prefix.
python3 - "$tmp" "$ONEDNN_DIR" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for whl in sorted(src.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if len(parts) > 3 and parts[0].endswith(".data") and parts[1] == "data" and not info.is_dir():
                out = dst.joinpath(*parts[2:])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(info))
PY
# Wheels cannot hold symlinks: the three copies of the library are identical files.
( cd "$ONEDNN_DIR/lib" && rm -f libdnnl.so libdnnl.so.3.2 && ln -s libdnnl.so.3 libdnnl.so )
echo "oneDNN $VERSION installed in $ONEDNN_DIR"
