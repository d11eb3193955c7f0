#!/usr/bin/env bash
# Run a pinned kustomize: `scripts/kustomize.sh build k8s/overlays/store-berlin-01`.
#
# On first use (or when the pin changes) kustomize is built from the Go module
# proxy into the gitignored .tools/bin (needs `go` on PATH; takes a minute or
# two), then every call runs that binary with the given arguments. Build output
# goes to stderr, so stdout is only kustomize's.
set -euo pipefail

# A released sigs.k8s.io/kustomize/kustomize/v5 version. v5.8.2 needs go >= 1.26
# (v5.8.3 needs go >= 1.27); bump together with the Go toolchain.
KUSTOMIZE_VERSION=v5.8.2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
KUSTOMIZE="$BIN_DIR/kustomize"

installed_version() {
  # `kustomize version` prints e.g. "v5.8.3"; nothing if the binary is missing or broken.
  [[ -x "$KUSTOMIZE" ]] && "$KUSTOMIZE" version 2>/dev/null | head -n1 || true
}

if [[ "$(installed_version)" != "$KUSTOMIZE_VERSION" ]]; then
  command -v go >/dev/null 2>&1 || {
    echo "error: kustomize $KUSTOMIZE_VERSION is not in $BIN_DIR and 'go' is not on PATH to build it" >&2
    exit 127
  }
  mkdir -p "$BIN_DIR"
  (
    # Serialise concurrent first runs (e.g. parallel test workers) on one lock.
    if command -v flock >/dev/null 2>&1; then
      exec 9>"$BIN_DIR/.kustomize.lock"
      flock 9
    fi
    if [[ "$(installed_version)" != "$KUSTOMIZE_VERSION" ]]; then
      echo "building kustomize $KUSTOMIZE_VERSION into $BIN_DIR (first run only) ..." >&2
      start=$SECONDS
      GOBIN="$BIN_DIR" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
      echo "built kustomize $KUSTOMIZE_VERSION in $((SECONDS - start))s" >&2
    fi
  )
  got="$(installed_version)"
  if [[ "$got" != "$KUSTOMIZE_VERSION" ]]; then
    echo "error: built kustomize reports version '${got:-?}', expected $KUSTOMIZE_VERSION" >&2
    exit 1
  fi
fi

exec "$KUSTOMIZE" "$@"
