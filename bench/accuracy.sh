#!/bin/bash
# accuracy.sh: B6's test accuracy, tapegrad against PyTorch, over several
# seeds, as one Markdown table.
#
#   bench/accuracy.sh
#   SEEDS=10 THREADS=1 bench/accuracy.sh
#
# One epoch's accuracy moves with the seed (initial weights, dropout masks,
# shuffle order), and the two sides cannot share random numbers, so one run
# each says little. For seeds 0 .. SEEDS-1 this runs fmnist on both sides,
# alternately (tapegrad seed 0, PyTorch seed 0, tapegrad seed 1, ...):
# `tapegrad-bench fmnist --seed S` and `torch_seeded.py fmnist --seed S`
# (torch_ref.py with its seeds offset by S; seed 0 is torch_ref.py's own
# run). It prints one row per seed, then each side's mean and sample
# standard deviation, the difference of the means and a rough 95% interval
# of it (Welch's t, with the Welch-Satterthwaite degrees of freedom).
#
# Environment:
#   SEEDS      how many seeds (default 5)
#   THREADS    threads of both sides (default 2); accuracy does not depend on it
#              beyond float summation order
#   STEPS      batches per epoch (default: the whole epoch; for smoke runs)
#   TG_BENCH   the tapegrad-bench program (default: the newest one under
#              build*/bench/ of this checkout, sanitizer builds excluded)
#   TORCH_REF  torch_ref.py (default: ../shared/bench/torch_ref.py beside
#              the checkout); read by torch_seeded.py
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

seeds=${SEEDS:-5}
threads=${THREADS:-2}
steps=${STEPS:-}
for v in "SEEDS=$seeds" "THREADS=$threads" ${steps:+"STEPS=$steps"}; do
    case ${v#*=} in '' | *[!0-9]* | 0)
        echo "accuracy.sh: ${v%%=*}='${v#*=}' is not a positive integer" >&2
        exit 2
        ;;
    esac
done

bench=${TG_BENCH:-}
if [ -z "$bench" ]; then
    bench=$(ls -t "$root"/build*/bench/tapegrad-bench 2>/dev/null | grep -v -- '-san/' | head -n 1)
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "accuracy.sh: no tapegrad-bench found (build it: cmake --build build --target tapegrad_bench," >&2
    echo "or set TG_BENCH)" >&2
    exit 1
fi
export TORCH_REF=${TORCH_REF:-$(dirname "$root")/shared/bench/torch_ref.py}
python=/usr/bin/python3
seeded=$here/torch_seeded.py
if [ ! -f "$TORCH_REF" ]; then
    echo "accuracy.sh: $TORCH_REF not found (set TORCH_REF)" >&2
    exit 1
fi
if ! torch_version=$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    echo "accuracy.sh: python3-torch is not installed (apt-get install -y python3-torch)" >&2
    exit 1
fi
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE # as compare.sh: same kernels on both sides

# The value of key in a result line (key=value fields).
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

args=(fmnist --threads "$threads")
[ -n "$steps" ] && args+=(--steps "$steps")

rows=()
tg_acc="" pt_acc=""
for ((s = 0; s < seeds; s++)); do
    echo "  seed $((s + 1))/$seeds: tapegrad" >&2
    tg_a="fail" tg_l="fail" pt_a="fail" pt_l="fail"
    if line=$("$bench" "${args[@]}" --seed "$s"); then
        tg_a=$(field "$line" test_accuracy) tg_l=$(field "$line" test_loss)
        tg_acc+="$tg_a"$'\n'
    else
        echo "accuracy.sh: tapegrad-bench ${args[*]} --seed $s failed" >&2
    fi
    echo "  seed $((s + 1))/$seeds: PyTorch" >&2
    if line=$("$python" "$seeded" "${args[@]}" --seed "$s"); then
        pt_a=$(field "$line" test_accuracy) pt_l=$(field "$line" test_loss)
        pt_acc+="$pt_a"$'\n'
    else
        echo "accuracy.sh: torch_seeded.py ${args[*]} --seed $s failed" >&2
    fi
    pct() { awk -v x="$1" 'BEGIN { if (x == "fail") print x; else printf "%.2f", 100 * x }'; }
    rows+=("| $s | $(pct "$tg_a") | $tg_l | $(pct "$pt_a") | $pt_l |")
    echo "  ${rows[-1]}" >&2
done

# Mean and sample standard deviation of each side (in points), the
# difference of the means and its Welch interval. The t quantile comes from
# a table (linear in between; 1.96 for large df): rough, as announced.
summary=$(awk -v tg="$tg_acc" -v pt="$pt_acc" '
function load(s, v,    n, a, i) { n = split(s, a, "\n"); k = 0
    for (i = 1; i <= n; i++) if (a[i] != "") v[++k] = 100 * a[i]
    return k }
function mean(v, n,    i, t) { t = 0; for (i = 1; i <= n; i++) t += v[i]; return t / n }
function var(v, n, m,    i, t) { t = 0; for (i = 1; i <= n; i++) t += (v[i] - m)^2; return t / (n - 1) }
function tq(df,    lo) { # 97.5% quantile of Student t
    split("12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228 2.201 2.179 2.160 2.145 2.131 2.120 2.110 2.101 2.093 2.086 2.080 2.074 2.069 2.064 2.060 2.056 2.052 2.048 2.045 2.042", q, " ")
    if (df >= 30) return df >= 120 ? 1.96 : 2.042 - (df - 30) * (2.042 - 1.980) / 90
    if (df < 1) df = 1
    lo = int(df); return q[lo] + (df - lo) * (q[lo + 1] - q[lo])
}
BEGIN {
    n1 = load(tg, a); n2 = load(pt, b)
    if (n1 == 0 || n2 == 0) { print "- not enough runs for a summary"; exit }
    m1 = mean(a, n1); m2 = mean(b, n2)
    printf "- tapegrad: mean %.2f %%", m1
    if (n1 > 1) { v1 = var(a, n1, m1); printf ", standard deviation %.2f points", sqrt(v1) }
    printf " (%d seed%s)\n", n1, n1 > 1 ? "s" : ""
    printf "- PyTorch: mean %.2f %%", m2
    if (n2 > 1) { v2 = var(b, n2, m2); printf ", standard deviation %.2f points", sqrt(v2) }
    printf " (%d seed%s)\n", n2, n2 > 1 ? "s" : ""
    d = m1 - m2
    printf "- difference of the means (tapegrad - PyTorch): %+.2f points", d
    if (n1 > 1 && n2 > 1) {
        se2 = v1 / n1 + v2 / n2
        if (se2 > 0) {
            df = se2^2 / ((v1 / n1)^2 / (n1 - 1) + (v2 / n2)^2 / (n2 - 1))
            h = tq(df) * sqrt(se2)
            printf "; rough 95%% interval %+.2f to %+.2f (Welch, df %.1f)", d - h, d + h, df
        }
    }
    printf "\n"
}')

echo "## B6 (fmnist) test accuracy over seeds"
echo
echo "- date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "- tapegrad-bench: $bench"
echo "- PyTorch $torch_version: $python $seeded (torch_ref.py: $TORCH_REF)"
echo "- SEEDS=$seeds THREADS=$threads STEPS=${steps:-whole epoch}; the sides alternate"
echo
echo "| seed | tapegrad accuracy % | tapegrad test loss | PyTorch accuracy % | PyTorch test loss |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "$summary"
