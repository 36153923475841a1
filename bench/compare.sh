#!/bin/bash
# compare.sh: tapegrad against PyTorch on the benchmark workloads, as one
# Markdown table.
#
#   bench/compare.sh [WORKLOAD...]      (default: seed1d mlp2 lenet conv cnnbn fmnist)
#
# Environment:
#   THREADS    thread counts to run (default "1 2"); both sides get the same
#   RUNS       runs of each side per workload and thread count (default 5)
#   STEPS      timed steps of every workload (default: per workload, below;
#              for fmnist the batches per epoch, default the whole epoch)
#   TG_BENCH   the tapegrad-bench program (default: the newest one under
#              build*/bench/ of this checkout, sanitizer builds excluded)
#   TORCH_REF  torch_ref.py (default: ../shared/bench/torch_ref.py beside
#              the checkout)
#
# The two sides run alternately (tapegrad, PyTorch, tapegrad, ...) so that
# a burst of load from elsewhere hits both; each cell is the median of the
# runs' medians, with the runs' range beside it. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are unset for the runs (a forced core type such as
# Haswell halves sgemm on newer CPUs), after being reported.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

threads_list=${THREADS:-"1 2"}
runs=${RUNS:-5}
if [ $# -gt 0 ]; then workloads=("$@"); else workloads=(seed1d mlp2 lenet conv cnnbn fmnist); fi

# Timed steps per workload: at least 20 (WORKLOADS.md), more where a step is short.
default_steps() {
    case $1 in
    seed1d) echo 200 ;;
    mlp2) echo 1000 ;;
    lenet) echo 50 ;;
    conv) echo 20 ;;
    cnnbn) echo 30 ;;
    *) echo "" ;; # fmnist: the whole epoch
    esac
}

for w in "${workloads[@]}"; do
    case $w in
    seed1d | mlp2 | lenet | conv | cnnbn | fmnist) ;;
    *)
        echo "compare.sh: unknown workload '$w' (seed1d mlp2 lenet conv cnnbn fmnist)" >&2
        exit 2
        ;;
    esac
done
case $runs in '' | *[!0-9]* | 0)
    echo "compare.sh: RUNS='$runs' is not a positive integer" >&2
    exit 2
    ;;
esac

# ---------------------------------------------------------------- the programs

bench=${TG_BENCH:-}
if [ -z "$bench" ]; then
    bench=$(ls -t "$root"/build*/bench/tapegrad-bench 2>/dev/null | grep -v -- '-san/' | head -n 1)
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "compare.sh: no tapegrad-bench found (build it: cmake --build build --target tapegrad_bench," >&2
    echo "or set TG_BENCH)" >&2
    exit 1
fi
torch_ref=${TORCH_REF:-$(dirname "$root")/shared/bench/torch_ref.py}
python=/usr/bin/python3
torch_version=""
if [ ! -f "$torch_ref" ]; then
    torch_note="PyTorch side skipped: $torch_ref not found (set TORCH_REF)"
elif ! torch_version=$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    torch_note="PyTorch side skipped: python3-torch is not installed (apt-get install -y python3-torch)"
    torch_version=""
else
    torch_note=""
fi

# ---------------------------------------------------------------- the machine

echo "## tapegrad vs PyTorch"
echo
echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), nproc $(nproc)"
vars=$(env | grep -E '^(OPENBLAS|OMP)_' | sort | tr '\n' ' ')
echo "- environment: ${vars:-none set}"
[ -n "${OPENBLAS_CORETYPE+x}${OPENBLAS_L2_SIZE+x}" ] &&
    echo "  (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the runs below)"
echo "- tapegrad-bench: $bench"
if [ -n "$torch_note" ]; then
    echo "- $torch_note"
else
    echo "- PyTorch $torch_version: $python $torch_ref"
fi
echo "- THREADS=\"$threads_list\" RUNS=$runs STEPS=${STEPS:-per workload}; runs alternate between the sides"
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# ---------------------------------------------------------------- helpers

# The value of key in a result line (key=value fields).
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# Median and range of the numbers on stdin: "median lo hi", or nothing.
stats() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s %s %s\n", m, v[1], v[NR] }'
}

# Formats a number: whole from 1000 up, 1 decimal from 10 up, else 3 digits.
num() { awk -v x="$1" 'BEGIN { if (x == "") print "-"; else if (x >= 1000) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.3g", x }'; }

# "median (lo-hi)" of a column of numbers, or "fail".
cell() {
    local s
    s=$(printf '%s' "$1" | stats)
    if [ -z "$s" ]; then echo "fail"; return; fi
    set -- $s
    if [ "$runs" -gt 1 ]; then echo "$(num "$1") ($(num "$2")–$(num "$3"))"; else num "$1"; fi
}
med() { printf '%s' "$1" | stats | cut -d' ' -f1; }

# ---------------------------------------------------------------- runs

rows=()
blas_cores=""
for t in $threads_list; do
    sgemm=""
    if printf '%s\n' "${workloads[@]}" | grep -qx conv; then
        for ((r = 0; r < runs; r++)); do
            line=$("$bench" sgemm --threads "$t" --steps 20 2>/dev/null) &&
                sgemm+="$(field "$line" gflops)"$'\n'
        done
    fi
    for w in "${workloads[@]}"; do
        steps=${STEPS:-$(default_steps "$w")}
        args=(--threads "$t")
        [ -n "$steps" ] && args+=(--steps "$steps")
        tg_time="" tg_rss="" tg_x="" pt_time="" pt_rss="" pt_x=""
        key=median_us x=gflops
        [ "$w" = fmnist ] && key=sec_per_epoch x=test_accuracy
        for ((r = 0; r < runs; r++)); do
            echo "  $w threads=$t run $((r + 1))/$runs" >&2
            if line=$("$bench" "$w" "${args[@]}"); then
                tg_time+="$(field "$line" $key)"$'\n'
                tg_rss+="$(field "$line" peak_rss_mib)"$'\n'
                tg_x+="$(field "$line" $x)"$'\n'
                blas_cores+="tapegrad:$(field "$line" blas_core) "
            else
                echo "compare.sh: tapegrad-bench $w ${args[*]} failed" >&2
            fi
            [ -n "$torch_note" ] && continue
            if line=$("$python" "$torch_ref" "$w" "${args[@]}"); then
                pt_time+="$(field "$line" $key)"$'\n'
                pt_rss+="$(field "$line" peak_rss_mib)"$'\n'
                pt_x+="$(field "$line" $x)"$'\n'
                blas_cores+="PyTorch:$(field "$line" blas_core) "
            else
                echo "compare.sh: torch_ref.py $w ${args[*]} failed" >&2
            fi
        done
        unit="µs/step"
        [ "$w" = fmnist ] && unit="s/epoch"
        tgm=$(med "$tg_time") ptm=$(med "$pt_time")
        ratio="-"
        [ -n "$tgm" ] && [ -n "$ptm" ] && ratio=$(awk -v a="$ptm" -v b="$tgm" 'BEGIN { printf "%.2f", a / b }')
        pt_cell="-" pt_rss_cell="-"
        if [ -z "$torch_note" ]; then pt_cell=$(cell "$pt_time"); pt_rss_cell=$(num "$(med "$pt_rss")"); fi
        note=""
        if [ "$w" = conv ]; then
            note="GFLOP/s: tapegrad $(num "$(med "$tg_x")")"
            [ -z "$torch_note" ] && note+=", PyTorch $(num "$(med "$pt_x")")"
            note+=", sgemm 1024³ $(num "$(med "$sgemm")")"
        elif [ "$w" = fmnist ]; then
            note="test accuracy: tapegrad $(med "$tg_x")"
            [ -z "$torch_note" ] && note+=", PyTorch $(med "$pt_x")"
            [ -n "$steps" ] && note+=" ($steps batches)"
        fi
        rows+=("| $w | $t | $unit | $(cell "$tg_time") | $pt_cell | $ratio | $(num "$(med "$tg_rss")") | $pt_rss_cell | $note |")
    done
done

cores=$(printf '%s\n' $blas_cores | sort -u | tr '\n' ' ')
echo "- OpenBLAS kernels: ${cores:-unknown}"
echo
echo "Each time: median of $runs runs (their range in brackets); ratio = PyTorch / tapegrad"
echo "(above 1: tapegrad is faster). RSS: peak resident MiB of the whole process, median."
echo
echo "| workload | threads | unit | tapegrad | PyTorch | ratio | tapegrad RSS | PyTorch RSS | notes |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
