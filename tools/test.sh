#!/bin/bash
# Run the whole test suite: unit tests in a normal and an ASan/UBSan build,
# then the end-to-end tests as unprivileged users with real images.
#
# Usage: tools/test.sh [PYTEST ARGUMENTS...]
#
# Runs as root (CI does; elsewhere use sudo), because the end-to-end setup
# creates test users and makes /dev/fuse mode 0666 as desktop distributions
# do. Installs missing packages first. Builds the Debian test image with
# debootstrap unless FIM_TEST_DEBIAN=0. The last line is
# "summary: N passed, N failed" over all suites.
set -uo pipefail

repository=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repository"

if [[ $EUID -ne 0 ]]; then
    echo "test.sh: run as root (sudo $0), because the end-to-end tests create unprivileged test users" >&2
    exit 2
fi

tools/deps.sh || exit 2

passed=0
failed=0

# Add the counts from meson's "Ok:" and "Fail:" lines of one unit run.
run_unit_suite() {
    local build_dir=$1 output
    output=$(meson test -C "$build_dir" --suite unit --print-errorlogs 2>&1)
    echo "$output" | grep -E '^ *[0-9]+/[0-9]+ |FAIL|ERROR' >&2
    passed=$((passed + $(echo "$output" | awk '/^Ok:/ {print $2}')))
    failed=$((failed + $(echo "$output" | awk '/^Fail:/ {print $2}') + $(echo "$output" | awk '/^Timeout:/ {print $2}')))
}

build() {
    local build_dir=$1
    shift
    if [[ ! -d $build_dir ]]; then
        meson setup "$build_dir" "$@" >/dev/null || return 1
    fi
    ninja -C "$build_dir" >/dev/null
}

if ! build build; then
    echo "test.sh: the build failed" >&2
    echo "summary: 0 passed, 1 failed"
    exit 1
fi
run_unit_suite build

if build build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 run_unit_suite build-asan
else
    echo "test.sh: the ASan/UBSan build failed" >&2
    failed=$((failed + 1))
fi

export FIM_TEST_DEBIAN=${FIM_TEST_DEBIAN:-1}
e2e_output=$(mktemp)
tests/run-e2e.sh "$@" 2>&1 | tee "$e2e_output"
e2e_summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$e2e_output" | tail -n 1)
rm -f "$e2e_output"
if [[ -z $e2e_summary ]]; then
    echo "test.sh: the end-to-end run printed no summary" >&2
    failed=$((failed + 1))
else
    passed=$((passed + $(echo "$e2e_summary" | awk '{print $1}')))
    failed=$((failed + $(echo "$e2e_summary" | awk '{print $3}' | tr -d ,)))
fi

echo "summary: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
