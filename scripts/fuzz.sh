#!/usr/bin/env bash
# Coverage-guided fuzzing of Sluice's parsers with libFuzzer (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]   fuzz each harness (default: all) for SECONDS (default 600) in
#                                            turn, one process at a time; then print, per harness, executions,
#                                            coverage (cov: code edges and Lua line edges, ft: features), and
#                                            crashes. New inputs go to fuzz-out/HARNESS/corpus, crash, timeout
#                                            and out-of-memory inputs to fuzz-out/HARNESS/ (crash-*, ...). The
#                                            run goes on after a crash, so one bug does not hide the next.
#   scripts/fuzz.sh --smoke [HARNESS...]     the short run of scripts/test.sh: each harness replays its
#                                            committed corpus, then fuzzes new inputs for a few seconds (fixed
#                                            seed); the first crash fails it (input kept in fuzz-out/HARNESS/).
#   scripts/fuzz.sh --triage HARNESS DIR     replays every crash-*/timeout-*/oom-* input of DIR and groups them
#                                            by the first line of their report (one bug, many inputs).
#   scripts/fuzz.sh --build                  only build the harnesses (build-fuzz/, clang).
#   scripts/fuzz.sh --list                   the harness names.
#
# Environment: FUZZ_BUILD (default build-fuzz), FUZZ_OUT (default fuzz-out), FUZZ_SMOKE_SECONDS (default 8),
# FUZZ_ARGS (more libFuzzer flags, e.g. "-max_len=65536"), SLUICE_FUZZ_KNOWN (long runs only: comma-separated
# ids of open findings to look past, see docs/fuzzing.md; --smoke ignores it: there every finding fails).
# Reproduce a crash: build-fuzz/tests/fuzz/HARNESS FILE (runs the one input and prints the report).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${FUZZ_BUILD:-build-fuzz}
OUT=${FUZZ_OUT:-fuzz-out}
HARNESSES=(fuzz_request fuzz_response fuzz_chunked fuzz_conn fuzz_router fuzz_path fuzz_sse fuzz_yaml fuzz_ai_stream fuzz_rag_index
           fuzz_rag_embeddings fuzz_chat_scan fuzz_json_locate)

build() {
    command -v clang >/dev/null || { echo "fuzz: clang is missing (scripts/deps.sh installs it)"; return 1; }
    CC=clang cmake -S . -B "$BUILD" -DSLUICE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
        cmake --build "$BUILD" --target fuzz_all -j"$(nproc 2>/dev/null || echo 2)" >"$BUILD/fuzz_all.log" 2>&1 ||
        { tail -40 "$BUILD/fuzz_all.log"; echo "fuzz: build failed (full log: $BUILD/fuzz_all.log)"; return 1; }
}

# libFuzzer flags of one harness: input size bound and dictionary.
flags() {
    local h=$1 max=4096
    case $h in fuzz_yaml | fuzz_ai_stream) max=8192 ;; fuzz_rag_index) max=16384 ;; esac
    echo "-max_len=$max -timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
    local dict="tests/fuzz/${h#fuzz_}.dict"
    case $h in fuzz_request | fuzz_response | fuzz_chunked | fuzz_conn) dict=tests/fuzz/http.dict ;; esac
    [ -f "$dict" ] && echo "-dict=$dict"
}

check_names() {
    for h in "$@"; do
        [[ " ${HARNESSES[*]} " == *" $h "* ]] || { echo "fuzz: unknown harness $h (--list)"; exit 2; }
    done
}

# Executions, coverage and features from a libFuzzer log (fork mode "#N: cov: C ft: F" lines or the
# in-process "#N ... cov: C ft: F" ones).
stats() {
    awk '/^#[0-9]+/ && / cov: / {
            n = $1; gsub(/[#:]/, "", n)
            for (i = 1; i <= NF; i++) { if ($i == "cov:") c = $(i + 1); if ($i == "ft:") f = $(i + 1) }
         }
         /^stat::number_of_executed_units:/ { n = $2 }
         END { printf "%s %s %s", n + 0, c + 0, f + 0 }' "$1"
}

smoke() {
    local secs=${FUZZ_SMOKE_SECONDS:-8} failed=0
    unset SLUICE_FUZZ_KNOWN
    for h in "$@"; do
        local tmp
        tmp=$(mktemp -d /tmp/sluice-fuzz-XXXXXX)
        # new inputs land in the first directory (thrown away); the committed corpus is only read
        # shellcheck disable=SC2046
        "$BUILD/tests/fuzz/$h" $(flags "$h") ${FUZZ_ARGS:-} -seed=1 -max_total_time="$secs" \
            -artifact_prefix="$tmp/" "$tmp" "tests/fuzz/corpus/$h" >"$tmp/log" 2>&1
        local rc=$?
        read -r n c f < <(stats "$tmp/log")
        if [ $rc -eq 0 ]; then
            echo "ok   $h: $n executions, cov $c, ft $f"
        else
            mkdir -p "$OUT/$h"
            cp "$tmp"/crash-* "$tmp"/timeout-* "$tmp"/oom-* "$tmp"/leak-* "$OUT/$h/" 2>/dev/null
            echo "FAIL $h (exit $rc); input kept in $OUT/$h/:"
            grep -E "FUZZ INVARIANT|ERROR: |SUMMARY|runtime error|Test unit written" "$tmp/log" | head -8 |
                sed 's/^/    /'
            failed=$((failed + 1))
        fi
        rm -rf "$tmp"
    done
    [ $failed -eq 0 ]
}

long() {
    local secs=$1
    shift
    local summary=()
    for h in "$@"; do
        mkdir -p "$OUT/$h/corpus"
        echo "== $h: ${secs}s"
        # fork mode: the fuzzing goes on in a fresh process after a crash, timeout or OOM (each input saved)
        # shellcheck disable=SC2046
        "$BUILD/tests/fuzz/$h" $(flags "$h") ${FUZZ_ARGS:-} -fork=1 -ignore_crashes=1 -ignore_timeouts=1 \
            -ignore_ooms=1 -max_total_time="$secs" -artifact_prefix="$ROOT/$OUT/$h/" "$OUT/$h/corpus" \
            "tests/fuzz/corpus/$h" >"$OUT/$h/log" 2>&1
        read -r n c f < <(stats "$OUT/$h/log")
        local crashes
        crashes=$(find "$OUT/$h" -maxdepth 1 \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o \
            -name 'leak-*' \) | wc -l)
        summary+=("$(printf '%-16s %12s %8s %8s %8s' "$h" "$n" "$c" "$f" "$crashes")")
        tail -2 "$OUT/$h/log" | sed 's/^/    /'
    done
    echo
    printf '%-16s %12s %8s %8s %8s\n' harness executions cov ft crashes
    printf '%s\n' "${summary[@]}"
    echo "(crash inputs and logs: $OUT/<harness>/; reproduce: $BUILD/tests/fuzz/<harness> <file>)"
}

# The first telling line of a harness's report on one input.
why() {
    "$BUILD/tests/fuzz/$1" "$2" 2>&1 | grep -m1 -E "FUZZ INVARIANT|ERROR: AddressSanitizer|runtime error|ERROR: LeakSanitizer|ERROR: libFuzzer: (timeout|out-of-memory)" |
        sed -E 's/0x[0-9a-f]+/0x?/g; s/==[0-9]+==//; s/[0-9]+/N/g'
}

triage() {
    local h=$1 dir=$2
    for f in "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-*; do
        [ -e "$f" ] || continue
        local w
        w=$(why "$h" "$f")
        printf '%s\t%s\n' "${w:-(does not fail now)}" "$f"
    done | sort | awk -F'\t' '$1 != last { if (n) printf "%5d  %s\n       e.g. %s\n", n, last, ex; last = $1; n = 0; ex = $2 }
                              { n++ } END { if (n) printf "%5d  %s\n       e.g. %s\n", n, last, ex }'
}

case "${1:-}" in
--triage)
    check_names "$2"
    triage "$2" "$3"
    ;;
--list) printf '%s\n' "${HARNESSES[@]}" ;;
--build) build ;;
--smoke)
    shift
    [ $# -gt 0 ] || set -- "${HARNESSES[@]}"
    check_names "$@"
    build && smoke "$@"
    ;;
*)
    secs=600
    if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
        secs=$1
        shift
    fi
    [ $# -gt 0 ] || set -- "${HARNESSES[@]}"
    check_names "$@"
    build && long "$secs" "$@"
    ;;
esac
