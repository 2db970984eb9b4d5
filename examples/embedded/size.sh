#!/usr/bin/env bash
# Measures what recourse costs on the Cortex-M3 example and writes the
# "Embedded" section at the end of BENCHMARKS.md (replacing an earlier one):
#   - flash (.text + .rodata) and RAM (.data + .bss) of three programs with
#     the same runtime (cortex-m-rt, semihosting, the SysTick timer and
#     block_on): `baseline` (one read of the peripheral, no recourse),
#     `one_call` (that read through one recourse call site: retries,
#     per-attempt timeouts, TokenBucket budget, CircuitBreaker) and the
#     example (five call sites, 1 and 2 slots, record printing);
#   - from `probe` under qemu: call future sizes, peak stack of one call
#     (stack painting) and instructions per call (-icount).
# Needs qemu-system-arm, the thumbv7m-none-eabi target and GNU binutils'
# `size` and `nm`. Usage: examples/embedded/size.sh [--print]  (--print: stdout only)
set -euo pipefail
cd "$(dirname "$0")"
elf=target/thumbv7m-none-eabi/release
cargo build --release --locked --bins --quiet
cargo build --release --locked --features paint-stack --bin probe --quiet

sections() { # ELF -> "flash ram"
    size -A "$1" | awk '
        $1 == ".text" || $1 == ".rodata" { f += $2 }
        $1 == ".data" || $1 == ".bss" { r += $2 }
        END { print f, r }'
}
# Flash of `one_call` over `baseline`, by where the code comes from.
breakdown() { # BASE ONE -> markdown rows "| group | bytes |"
    join -t $'\t' -a 1 -a 2 -e 0 -o '0,1.2,2.2' \
        <(syms "$1") <(syms "$2") |
        awk -F '\t' '
        {
            d = $3 - $2; n = $1
            if (d == 0) next
            if (n ~ /machine::|CallMachine/) g = "call machine (`recourse_core::machine`)"
            else if (n ~ /__cortex_m_rt_main/) g = "the call site: `main` with the call future'"'"'s poll inlined"
            else if (n ~ /driver::/) g = "driver: express lane, attempt slots (`recourse_core::driver`)"
            else if (n ~ /breaker|Guard|token_bucket|budget::/) g = "gate: circuit breaker and `TokenBucket` (the example'"'"'s `Guard`)"
            else if (n ~ /backoff::/) g = "backoff and its jitter draw (`recourse_core::backoff`, fastrand)"
            else if (n ~ /hedge::/) g = "hedge trigger (`recourse_core::hedge`)"
            else if (n ~ /board::|SysTick|TickCounter|counter::/) g = "the program'"'"'s SysTick `Timer` and `TickCounter`"
            else if (n ~ /compiler_builtins|__aeabi|__udiv|mem(cpy|move|set|clr)/) g = "compiler builtins (`memcpy`, `memclr`)"
            else if (n ~ /^\.Lanon|^\.L/) g = "constants and panic messages (`.rodata`)"
            else g = "other (semihosting, panic entry points)"
            s[g] += d
        }
        END { for (g in s) printf "| %s | %d B |\n", g, s[g] }' | sort -t '|' -k3 -rn
}
syms() { # ELF -> "name<TAB>size" (sizes of one name summed), sorted by name
    nm --size-sort -S -C --radix=d "$1" |
        awk '{ sz = $2 + 0; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); sub(/::h[0-9a-f]+$/, ""); s[$0] += sz }
             END { for (n in s) printf "%s\t%d\n", n, s[n] }' | LC_ALL=C sort -t $'\t' -k1,1
}

read -r base_f base_r < <(sections "$elf/baseline")
read -r one_f one_r < <(sections "$elf/one_call")
read -r ex_f ex_r < <(sections "$elf/recourse-embedded-example")
probe=$(timeout 120 cargo run --release --locked --quiet --features paint-stack --bin probe 2>/dev/null)
get() { awk -v k="$1" '$1 == k { print $2 }' <<<"$probe"; }
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

section=$(cat <<MD
## Embedded

Cortex-M3 (\`thumbv7m-none-eabi\`, qemu \`lm3s6965evb\`), release profile
(\`opt-level = "s"\`, LTO, one codegen unit, \`panic = "abort"\`); generated
by \`examples/embedded/size.sh\` with $(rustc --version | cut -d' ' -f1-2).
Flash is \`.text\` + \`.rodata\`, RAM is \`.data\` + \`.bss\` (the stack is
measured apart). Every program has the same runtime: cortex-m-rt,
semihosting output, the SysTick timer with its 24-bit counter extension,
and the \`wfi\` \`block_on\`.

| program | flash | RAM | flash over baseline | RAM over baseline |
|---|---:|---:|---:|---:|
| \`baseline\`: one read of the peripheral, no recourse | $base_f B | $base_r B | | |
| \`one_call\`: that read through one call site (retries, attempt timeouts, TokenBucket, CircuitBreaker) | $one_f B | $one_r B | $((one_f - base_f)) B ($(kib $((one_f - base_f)))) | $((one_r - base_r)) B |
| the example: five call sites, 1 and 2 slots, records printed | $ex_f B | $ex_r B | $((ex_f - base_f)) B ($(kib $((ex_f - base_f)))) | $((ex_r - base_r)) B |

Where the first call site's flash goes: the named symbols of \`one_call\`
minus those of \`baseline\` (GNU \`nm\`; alignment padding makes up the
rest). No floating-point code is left on the call path (the backoff
multiplier is read from the \`f64\`'s bits with integer arithmetic).

| from | flash |
|---|---:|
$(LC_ALL=C breakdown "$elf/baseline" "$elf/one_call")

| one call (from \`probe\`, under qemu) | value |
|---|---:|
| call future, 1 slot (this example's operation, gate: breaker + budget) | $(get future_1_slot) B |
| call future, 2 slots (the same, hedged) | $(get future_2_slots) B |
| peak stack of a call that fails twice, 1 slot, from the caller's stack pointer (future inside \`block_on\` included) | $(get stack_1_slot) B |
| peak stack of a hedged call, 2 slots | $(get stack_2_slots) B |
| instructions per call whose first attempt succeeds at once (gate included; qemu \`-icount\`, calibrated on a loop of known length; deterministic) | $(get insns_per_call) |

Goal (issue 18): under 12 KiB of flash and under 1 KiB of RAM per call
site for retries + timeouts + budget + breaker. Flash: $(kib $((one_f - base_f))) for the
first call site — $(if ((one_f - base_f < 12288)); then echo met; else echo "not met"; fi). RAM: $((one_r - base_r)) B of statics
plus the $(get future_1_slot)-byte call future — $(if (($(get future_1_slot) + one_r - base_r < 1024)); then echo met; else echo "not met"; fi).

RAM per call site is the call future, which lives on the stack of the task
that awaits it (here inside \`block_on\`), plus the budget's 16-byte
\`static\`; the breaker (\`CircuitBreaker\`, a plain value) lives where the
program keeps it. The budgets' 64-bit atomics use portable-atomic's
\`unsafe-assume-single-core\` here; its default lock-table fallback on a
32-bit target would add 2144 B of RAM.
MD
)

if [[ "${1:-}" == "--print" ]]; then
    echo "$section"
    exit 0
fi
bench=../../BENCHMARKS.md
# Drop an earlier Embedded section (it is the last one), then append.
awk '/^## Embedded$/ { exit } { print }' "$bench" >"$bench.tmp"
printf '%s\n\n%s\n' "$(sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$bench.tmp")" "$section" >"$bench"
rm -f "$bench.tmp"
echo "BENCHMARKS.md: Embedded section written" >&2
