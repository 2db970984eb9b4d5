#!/usr/bin/env bash
# Builds the embedded example, runs it under qemu-system-arm (Cortex-M3,
# lm3s6965evb; the runner in .cargo/config.toml) and fails unless the
# records it prints over semihosting equal expected.txt.
#
# Needs: qemu-system-arm (Debian: apt-get install qemu-system-arm) and the
# thumbv7m-none-eabi target (rustup target add thumbv7m-none-eabi).
# After a deliberate change of output: ./check.sh --bless
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# qemu's own messages go to stderr; the program's output is stdout. The
# timeout also bounds a program that never exits.
timeout 300 cargo run --release --locked >"$out"
if [[ "${1:-}" == "--bless" ]]; then
    cp "$out" expected.txt
    echo "expected.txt updated"
    exit 0
fi
diff -u expected.txt "$out"
echo "embedded example: the printed records equal expected.txt ($(wc -l <expected.txt) lines)"
