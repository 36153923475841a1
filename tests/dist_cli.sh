#!/bin/sh
# The command under mpirun (ctest, label mpi). Usage:
#   dist_cli.sh fail|resume|sync-bn TAPEGRAD TEST_DIST MODELS WORKDIR MPIRUN...
# fail:   rank 1 cannot open its data: every rank must stop within 10 s,
#         non-zero, with rank 1's message.
# resume: a checkpoint written by 2 ranks after one (short) epoch, resumed in
#         one process, must end where the 2-rank run of two epochs ends.
# sync-bn: cnnbn (dropout 0) trained by 2 ranks with --sync-bn must end where
#         one process ends (and without it must not); --profile shows the
#         communication.
set -u
mode=$1 tapegrad=$2 test_dist=$3 models=$4 work=$5
shift 5
mkdir -p "$work/data" || exit 1
"$test_dist" write-data "$work/data" || exit 1
common="--batch 32 --max-batches 4 --optimizer adam --dtype f64 --seed 3 --threads 1"
case $mode in
fail)
    start=$(date +%s)
    out=$(timeout 10 "$@" -np 2 sh -c '
        if [ "${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}" = 1 ]; then data=$1/missing; else data=$1/data; fi
        exec "$2" train "$3/lenet5.tgm" --data "$data" --max-batches 2 --threads 1' \
        sh "$work" "$tapegrad" "$models" 2>&1)
    rc=$?
    end=$(date +%s)
    printf '%s\n' "$out"
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        echo "dist_cli: expected a failure within 10 s, got exit $rc" >&2; exit 1
    fi
    case $out in
    *"$work/missing"*) ;;
    *) echo "dist_cli: rank 1's message (naming $work/missing) is missing" >&2; exit 1 ;;
    esac
    echo "stopped with exit $rc after $((end - start)) s"
    ;;
resume)
    rm -f "$work"/*.safetensors
    "$@" -np 2 "$tapegrad" train "$models/lenet5.tgm" --data "$work/data" $common \
        --epochs 1 --save "$work/a.safetensors" || exit 1
    "$tapegrad" train "$models/lenet5.tgm" --data "$work/data" $common \
        --epochs 1 --resume "$work/a.safetensors" --save "$work/b.safetensors" || exit 1
    "$@" -np 2 "$tapegrad" train "$models/lenet5.tgm" --data "$work/data" $common \
        --epochs 2 --save "$work/c.safetensors" || exit 1
    "$test_dist" compare "$work/b.safetensors" "$work/c.safetensors" 1e-12
    ;;
sync-bn)
    rm -f "$work"/*.safetensors
    sed 's/dropout 0.5/dropout 0/' "$models/cnnbn.tgm" > "$work/cnnbn0.tgm" || exit 1
    # SGD: Adam would blow the rounding noise in the gradient of the conv bias
    # in front of batch norm (zero in exact arithmetic) up to whole steps
    bn="$work/cnnbn0.tgm --data $work/data --batch 32 --max-batches 4 --optimizer sgd --dtype f64 --seed 3 --threads 1"
    out=$("$@" -np 2 "$tapegrad" train $bn --sync-bn --profile --save "$work/a.safetensors") || exit 1
    printf '%s\n' "$out"
    for row in "sync_batch_norm (comm)" "allreduce (wait)"; do
        case $out in
        *"$row"*) ;;
        *) echo "dist_cli: the profile has no '$row' row" >&2; exit 1 ;;
        esac
    done
    "$tapegrad" train $bn --save "$work/b.safetensors" || exit 1
    "$@" -np 2 "$tapegrad" train $bn --save "$work/c.safetensors" || exit 1
    "$test_dist" compare "$work/a.safetensors" "$work/b.safetensors" 1e-12 || exit 1
    if "$test_dist" compare "$work/c.safetensors" "$work/b.safetensors" 1e-6 2>/dev/null; then
        echo "dist_cli: per-rank batch norm matches one process: the check proves nothing" >&2
        exit 1
    fi
    ;;
*)
    echo "dist_cli: unknown mode $mode" >&2; exit 2 ;;
esac
