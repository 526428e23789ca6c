#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian/Ubuntu machine.
# Each area lists its Debian packages in scripts/apt-packages.d/*.txt, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

pkgs=$(cat scripts/apt-packages.d/*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \n' ' ')
if [ -n "${pkgs// /}" ]; then
    missing=()
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "apt-get install ${missing[*]}"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        say "system packages present: $pkgs"
    fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
