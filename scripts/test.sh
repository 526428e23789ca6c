#!/usr/bin/env bash
# The whole test suite: what CI runs and what a developer runs before landing.
#   scripts/test.sh          everything
#   FUZZ_SECONDS=N           how long each fuzz target runs (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; [ "$(type -t disk)" = function ] && disk || true; }
export CARGO_TERM_COLOR=never
# Disk: a full run with full debug info and incremental caches took 8.4 GB; CI machines share
# their disk, and one run failed with "No space left on device". Line tables keep backtraces
# readable; release builds (loom, benches, fuzz) carry no debug info here.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
export CARGO_PROFILE_TEST_DEBUG=line-tables-only
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_BENCH_DEBUG=0
disk() { df -h . | awk 'NR==2 {print "    disk: " $4 " free, " $5 " used; target/ " t}' t="$(du -sh target 2>/dev/null | cut -f1)"; }

bash scripts/setup.sh

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

say "cargo test --workspace"
# Tests that put processes on their own hosts (network namespaces) skip themselves where they
# cannot make them; as root with /dev/net/tun (CI) they must run, and fail if they cannot.
can_host() { [ "$(id -u)" = 0 ] && [ -c /dev/net/tun ] && command -v ip >/dev/null; }
PVP_REQUIRE_HOSTS="${PVP_REQUIRE_HOSTS:-$(can_host && echo 1 || echo 0)}"
export PVP_REQUIRE_HOSTS
cargo test --workspace --all-features

say "cargo doc (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --exclude pvp-fuzz

say "loom models (RUSTFLAGS=--cfg pvp_loom)"
# A separate target dir keeps the loom build from invalidating the normal one. One preemption
# per execution: with two, loom explores spin-waits on a thread that is mid-operation past
# its branch limit (the waits end in any fair run: the awaited thread never waits itself).
RUSTFLAGS="--cfg pvp_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=1 \
    cargo test --release -p pvp-core --test 'loom*'

# On CI (PVP_CI_PRUNE=1, set by .ci/run) builds no later step needs are removed as it goes.
prune() { [ "${PVP_CI_PRUNE:-0}" = 1 ] && rm -rf "$@" || true; }
prune target/loom

say "cargo bench --no-run (benches compile)"
cargo bench --workspace --no-run

# Extra steps an area needs (a second driver, a real etcd or Prometheus, ...).
for step in scripts/test.d/*.sh; do
    [ -e "$step" ] || continue
    say "$step"
    bash "$step"
done

prune target/debug target/release
if [ -d fuzz ]; then
    secs="${FUZZ_SECONDS:-20}"
    for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        say "cargo fuzz run $target (${secs}s)"
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
    done
fi

say "all checks passed"
