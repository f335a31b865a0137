#!/usr/bin/env sh
# Create, once, a cached virtual environment holding the real Open WebUI from PyPI, and print
# its folder on stdout. The end-to-end test (tests/e2e/test_openwebui.py, `make e2e-openwebui`)
# starts Open WebUI from there and points it at RodeoAI's /v1.
#
# Why a separate, cached venv: Open WebUI pins hundreds of packages (several of them clash with
# the app's own), and it takes minutes to install; it is a client we test against, not a
# dependency of RodeoAI. It lives outside the repository, under RODEOAI_E2E_CACHE.
#
# Why torch first: open-webui's dependencies (sentence-transformers, ...) ask for an open-ended
# `torch`, and with none installed pip would fetch the newest CUDA build, several GB. torch
# 2.13.0 is the CPU wheel this machine keeps on disk, and it satisfies those ranges.
#
# Usage: scripts/openwebui_env.sh  (prints the venv folder on stdout; progress goes to stderr)
set -eu
VERSION="${OPENWEBUI_VERSION:-0.12.4}"
TORCH="torch==2.13.0"
CACHE="${RODEOAI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rodeoai-e2e}"
DIR="$CACHE/open-webui-$VERSION"
STAMP="$DIR/.installed"
LOG="$CACHE/open-webui-$VERSION.log"

install() {
    "$PYTHON" -m venv "$DIR" &&
        "$DIR/bin/pip" install --upgrade pip &&
        "$DIR/bin/pip" install "$TORCH" &&
        "$DIR/bin/pip" install "$TORCH" "open-webui==$VERSION"
}

if [ ! -f "$STAMP" ]; then
    PYTHON="${OPENWEBUI_PYTHON:-$(command -v python3.11 || command -v python3)}"
    # Measured here: about 3 minutes and 2.9 GB on 2 cores (torch's CPU build is 0.75 GB of that).
    echo "installing open-webui $VERSION into $DIR (once; about 3 minutes, 3 GB)..." >&2
    started=$(date +%s)
    rm -rf "$DIR"
    mkdir -p "$CACHE"
    # pip's output goes to a log: its per-package index warnings would bury everything else.
    if ! install >"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        echo "installing open-webui $VERSION failed; the whole log is $LOG" >&2
        exit 1
    fi
    # Only a finished install is stamped: an interrupted one is redone from scratch next time.
    touch "$STAMP"
    echo "open-webui $VERSION installed in $(($(date +%s) - started)) s ($(du -sh "$DIR" | cut -f1))" >&2
fi
echo "$DIR"
