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
# Call summaries: without them the analyzer spends six minutes on uthash's
# macros in autograd/registry.c; with them, a second.
find "${dirs[@]}" -name '*.c' -print0 | sort -z |
    xargs -0 -n 1 -P "$(nproc)" gcc -std=c11 -D_POSIX_C_SOURCE=200809L -DTG_NO_CALLSITE -O1 \
        -fanalyzer -fanalyzer-call-summaries -Werror -I include -I autograd -I ops -isystem /usr/include/plplot \
        -c -o /dev/null
echo "static analysis: no findings"
