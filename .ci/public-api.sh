#!/usr/bin/env bash
# The public API of the published crates against the listings checked in
# (std-ext/public-api.txt, core/public-api.txt): fails, showing the diff,
# when the code exports something else. `--bless` rewrites the listings.
#
# cargo-public-api reads rustdoc's JSON, which only nightly emits: it runs
# `cargo +nightly rustdoc` itself, so a nightly toolchain must be installed
# (this script installs a minimal one when there is none).
set -euo pipefail
cd "$(dirname "$0")/.."

bless=0
if [ "${1:-}" = "--bless" ]; then
    bless=1
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
# The listings were made with this version; another may print them
# differently, so CI installs exactly it.
version=0.52.0
if [ "$(cargo public-api --version 2>/dev/null)" != "cargo-public-api $version" ]; then
    cargo install --locked cargo-public-api --version "$version"
fi
cargo public-api --version

status=0
for pair in "recourse-rs std-ext/public-api.txt" "recourse-core core/public-api.txt"; do
    read -r package listing <<<"$pair"
    generated="$(mktemp)"
    cargo public-api -p "$package" --all-features -ss >"$generated"
    if [ "$bless" = 1 ]; then
        mv "$generated" "$listing"
        echo "wrote $listing"
    elif ! diff -u "$listing" "$generated"; then
        echo "error: the public API of $package differs from $listing (above);" \
            "if the change is intended, run: bash .ci/public-api.sh --bless" >&2
        status=1
        rm -f "$generated"
    else
        echo "$package: public API matches $listing"
        rm -f "$generated"
    fi
done
exit "$status"
