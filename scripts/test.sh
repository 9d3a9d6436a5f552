#!/usr/bin/env bash
# Runs every test: C unit tests (ctest, under ASan/UBSan), busted specs (unit and integration against the real
# gateway), end-to-end checks (leak check of the ASan build under traffic, benchmark harness smoke run), and a
# short libFuzzer run of every harness in tests/fuzz (scripts/fuzz.sh --smoke), and the lint of Lua (luacheck)
# and C (clang-format).
# Installs what is missing first (Debian 12, as root). Prints one closing line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
bash scripts/build.sh --asan || { echo "build failed"; exit 1; }

passed=0
failed=0
log=$(mktemp -d /tmp/sluice-test-XXXXXX)
trap 'rm -rf "$log"' EXIT

echo "== C unit tests (ASan/UBSan)"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure) | tee "$log/ctest.txt"
read -r cp cf < <(awk '/tests passed, .* tests failed out of/ {t=$NF; f=$4; print t-f, f}' "$log/ctest.txt")
passed=$((passed + ${cp:-0})); failed=$((failed + ${cf:-1}))

echo "== busted specs"
luajit /usr/bin/busted -o utfTerminal 2>&1 | tee "$log/busted.txt"
read -r bp bf < <(sed 's/\x1b\[[0-9;]*m//g' "$log/busted.txt" |
    awk '/success(es)? \/ [0-9]+ failures? \/ [0-9]+ errors?/ {print $1, $4 + $7}' | tail -1)
passed=$((passed + ${bp:-0})); failed=$((failed + ${bf:-1}))

echo "== end-to-end"
for t in tests/e2e/*.sh; do
    [ -e "$t" ] || continue
    if bash "$t" > "$log/e2e.txt" 2>&1; then
        echo "ok   $t"; passed=$((passed + 1))
    else
        echo "FAIL $t"; sed 's/^/    /' "$log/e2e.txt" | tail -40; failed=$((failed + 1))
    fi
done

echo "== fuzz (short run: every harness replays its corpus, then fuzzes a few seconds; docs/fuzzing.md)"
bash scripts/fuzz.sh --smoke 2>&1 | tee "$log/fuzz.txt"
fp=$(grep -c '^ok   ' "$log/fuzz.txt")
ff=$(grep -c '^FAIL ' "$log/fuzz.txt")
[ $((fp + ff)) -gt 0 ] || ff=1 # the harnesses did not build
passed=$((passed + fp)); failed=$((failed + ff))

echo "== lint (luacheck with .luacheckrc; clang-format --dry-run with .clang-format)"
if luacheck -q . > "$log/luacheck.txt" 2>&1; then
    echo "ok   luacheck"; passed=$((passed + 1))
else
    echo "FAIL luacheck"; sed 's/^/    /' "$log/luacheck.txt" | tail -40; failed=$((failed + 1))
fi
if git ls-files '*.c' '*.h' | grep -v '^tests/e2e/' | xargs clang-format --dry-run -Werror > "$log/format.txt" 2>&1; then
    echo "ok   clang-format"; passed=$((passed + 1))
else
    echo "FAIL clang-format (clang-format -i the files named)"; grep -o '^[^:]*\.[ch]:' "$log/format.txt" | sort -u |
        sed 's/^/    /' | head -40; failed=$((failed + 1))
fi

echo
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
