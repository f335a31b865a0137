#!/usr/bin/env sh
# The browser tests drive Debian's Chromium headless through PyPI's playwright, which cannot
# download its own browsers here. Install the distribution's package once; if that is not
# possible, say how, and let the browser tests fail with the same advice.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "chromium is missing: install it as root with 'apt-get install chromium'" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser tests (once)..." >&2
if ! $SUDO apt-get install -y -q chromium >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null 2>&1
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 ||
        echo "could not install chromium: run 'apt-get install chromium' as root" >&2
fi
exit 0
