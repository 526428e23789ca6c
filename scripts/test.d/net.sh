#!/usr/bin/env bash
# pvp-net's tests again with the epoll driver forced, so CI covers both drivers
# (the first pass, `cargo test --workspace`, runs io_uring where the kernel allows it).
set -euo pipefail
cd "$(dirname "$0")/../.."
PVP_NET_DRIVER=epoll cargo test -p pvp-net --all-features
