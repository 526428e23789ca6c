#!/usr/bin/env bash
# The whole test suite: what CI runs and what a developer runs before landing.
#   scripts/test.sh          everything
#   FUZZ_SECONDS=N           how long each fuzz target runs (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
export CARGO_TERM_COLOR=never

bash scripts/setup.sh

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

say "cargo test --workspace"
cargo test --workspace --all-features

say "cargo doc (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --exclude pvp-fuzz

say "loom models (RUSTFLAGS=--cfg pvp_loom)"
# A separate target dir keeps the loom build from invalidating the normal one. One preemption
# per execution: with two, loom explores spin-waits on a thread that is mid-operation past
# its branch limit (the waits end in any fair run: the awaited thread never waits itself).
RUSTFLAGS="--cfg pvp_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=1 \
    cargo test --release -p pvp-core --test 'loom*'

say "cargo bench --no-run (benches compile)"
cargo bench --workspace --no-run

# Extra steps an area needs (a second driver, a real etcd or Prometheus, ...).
for step in scripts/test.d/*.sh; do
    [ -e "$step" ] || continue
    say "$step"
    bash "$step"
done

if [ -d fuzz ]; then
    secs="${FUZZ_SECONDS:-20}"
    for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        say "cargo fuzz run $target (${secs}s)"
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
    done
fi

say "all checks passed"
