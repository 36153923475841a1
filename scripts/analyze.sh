#!/usr/bin/env bash
# Static analysis of the library and the command: cppcheck and gcc's
# -fanalyzer, with no finding allowed. A suppression stands on the line it
# excuses and says why (cppcheck-suppress comments; the analyzer has none).
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=(autograd ops nn tools)
echo "== cppcheck"
cppcheck -q --enable=warning,portability,performance --inline-suppr --std=c11 \
    --error-exitcode=1 -DTG_NO_CALLSITE -I include -I autograd -I ops "${dirs[@]}"
echo "== gcc -fanalyzer"
# autograd/registry.c alone is analysed with call summaries: without them the
# analyzer spends six minutes in uthash's macros there (with them, a second);
# elsewhere summaries cost precision and raise false findings.
analyze() {
    local extra=()
    [ "$1" = autograd/registry.c ] && extra=(-fanalyzer-call-summaries)
    gcc -std=c11 -D_POSIX_C_SOURCE=200809L -DTG_NO_CALLSITE -O1 -fanalyzer "${extra[@]}" \
        -Werror -I include -I autograd -I ops -isystem /usr/include/plplot $MPI_CFLAGS \
        -c -o /dev/null "$1"
}
# nn/dist.c includes <mpi.h>
MPI_CFLAGS=$(pkg-config --cflags ompi-c 2>/dev/null || true)
export MPI_CFLAGS
export -f analyze
find "${dirs[@]}" -name '*.c' -print0 | sort -z | xargs -0 -n 1 -P "$(nproc)" bash -c 'analyze "$0"'
echo "static analysis: no findings"
