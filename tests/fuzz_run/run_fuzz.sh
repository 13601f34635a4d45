#!/usr/bin/env bash
# Bounded libFuzzer run (ctest label "fuzz"): the pgwire codec, the rules
# loader and key templates.
#
# Usage: run_fuzz.sh <source-root> <work-dir> [seconds [target...]]
#
# Configures tests/fuzz as its own clang project in <work-dir>/fuzz-build
# (only pgwire, cache_rules and the fuzzers, so it works whatever compiler the
# main build uses and whatever state the rest of the tree is in), builds
# fuzz_<target> for each target (default: frontend backend rules key_template),
# and runs them one after another, each for PGSHELF_FUZZ_SECONDS (else
# [seconds], else 60) on a fresh copy of the committed corpus
# tests/fuzz/corpus/<target> in <work-dir>/fuzz-corpus, so the source tree is
# never written; tests/fuzz/<target>.dict, when present, is passed as the
# dictionary. Any crash, sanitizer report, leak or timeout fails the run;
# reproducers land in <work-dir>/fuzz-artifacts/<target>/.
# Exits 77 (ctest: skipped) when no clang++ is found; PGSHELF_FUZZ_CXX picks one.
set -euo pipefail

src=$(cd "${1:?source root}" && pwd)
work=$(mkdir -p "${2:?work dir}" && cd "$2" && pwd)
seconds=${PGSHELF_FUZZ_SECONDS:-${3:-60}}
shift $(($# < 3 ? $# : 3))
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(frontend backend rules key_template)
fi

cxx=${PGSHELF_FUZZ_CXX:-}
if [[ -z "$cxx" ]]; then
    for candidate in clang++ clang++-16 clang++-15 clang++-14; do
        if command -v "$candidate" >/dev/null 2>&1; then
            cxx=$candidate
            break
        fi
    done
fi
if [[ -z "$cxx" ]]; then
    echo "run_fuzz: no clang++ found (set PGSHELF_FUZZ_CXX); skipping" >&2
    exit 77
fi

generator=()
if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi
build="$work/fuzz-build"
if [[ -f "$build/CMakeCache.txt" ]] && ! grep -q "^CMAKE_CXX_COMPILER:.*$(basename "$cxx")\$" "$build/CMakeCache.txt"; then
    rm -rf "$build"  # compiler changed; CMake cannot switch in place
fi
cmake -S "$src/tests/fuzz" -B "$build" "${generator[@]}" \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/fuzz-configure.log" 2>&1 ||
    { cat "$work/fuzz-configure.log" >&2; exit 1; }
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
for target in "${targets[@]}"; do
    corpus="$work/fuzz-corpus/$target"
    artifacts="$work/fuzz-artifacts/$target"
    log="$work/fuzz-$target.log"
    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp "$src/tests/fuzz/corpus/$target/"* "$corpus/"
    dict=()
    if [[ -f "$src/tests/fuzz/$target.dict" ]]; then
        dict=(-dict="$src/tests/fuzz/$target.dict")
    fi
    echo "run_fuzz: fuzz_$target for ${seconds}s on $(ls "$corpus" | wc -l) seed files"
    # -max_len above the 10,000-byte startup cap, so the fuzzer can reach it.
    if "$build/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=12000 \
        "${dict[@]}" -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1; then
        result="ok"
    else
        result="FAILED"
        status=1
        tail -n 60 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' || true)
    echo "run_fuzz: fuzz_$target $result: ${execs:-?} execs; ${done_line:-no summary}; ${cov}"
done
exit $status
