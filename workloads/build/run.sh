#!/bin/sh
# A parallel C build for scheduler experiments: `make -jN` over a generated tree
# of uneven translation units (see gen.py), the small stand-in for a kernel compile.
#
# usage: run.sh [build|gen] [-j N] [--files N] [--scale F] [--seed S] [--workdir DIR]
#
#   build (default)  generate the tree if DIR does not hold it yet, then
#                    `make clean` and `make -jN`; prints nothing but errors and
#                    exits with make's exit code. Time this.
#   gen              only generate the tree (if needed) and print DIR. Run it
#                    first to keep generation out of a timed `build`.
#
#   -j N        make jobs (default: the number of online CPUs)
#   --files N   translation units besides main.c (default 96)
#   --scale F   multiplies every file's size (default 1.0)
#   --seed S    generator seed (default 1)
#   --workdir D where the tree lives (default: $TMPDIR or /tmp, then
#               aios-lab-build-f<N>-s<F>-r<S>-g<checksum of gen.py>, so the
#               same arguments reuse the same tree and a changed gen.py a new one)
#
# A tree is reused only when its stamp (.aios-build-stamp: the arguments and
# gen.py's checksum) matches; a stale one is regenerated. A non-empty DIR
# without a stamp is refused rather than overwritten.
# Sizes: at the defaults ~33 CPU-seconds of gcc -O2 (~0.35 s per file, 0.15-1 s);
# ~6.5 at --files 32 --scale 0.4, the size workloads/build.toml uses for the TCG guest.
set -u

here=$(cd "$(dirname "$0")" && pwd) || exit 2
gen="$here/gen.py"

die() { echo "run.sh: $*" >&2; exit 2; }

mode=build
case "${1:-}" in
    build|gen) mode=$1; shift ;;
esac
jobs=""
files=96
scale=1.0
seed=1
workdir=""
while [ $# -gt 0 ]; do
    case "$1" in
        -j) [ $# -ge 2 ] || die "-j needs a value"; jobs=$2; shift 2 ;;
        -j*) jobs=${1#-j}; shift ;;
        --jobs=*) jobs=${1#*=}; shift ;;
        --files|--scale|--seed|--workdir)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --files) files=$2 ;; --scale) scale=$2 ;; --seed) seed=$2 ;; --workdir) workdir=$2 ;;
            esac
            shift 2 ;;
        --files=*) files=${1#*=}; shift ;;
        --scale=*) scale=${1#*=}; shift ;;
        --seed=*) seed=${1#*=}; shift ;;
        --workdir=*) workdir=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; return 0; }
is_uint "$files" || die "--files must be a positive integer, not '$files'"
is_uint "$seed" || die "--seed must be a non-negative integer, not '$seed'"
case "$scale" in
    ''|*[!0-9.]*|*.*.*|.) die "--scale must be a positive number, not '$scale'" ;;
esac
if [ -z "$jobs" ]; then
    jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)
fi
is_uint "$jobs" && [ "$jobs" -ge 1 ] || die "-j must be a positive integer, not '$jobs'"

python=${PYTHON:-}
if [ -z "$python" ]; then
    for p in python3 python; do
        if command -v "$p" >/dev/null 2>&1; then python=$p; break; fi
    done
fi
[ -n "$python" ] || die "python3 not found (set PYTHON)"
[ -r "$gen" ] || die "$gen not found"

gensum=$(cksum < "$gen" | cut -d' ' -f1)
stamp="files=$files scale=$scale seed=$seed gen=$gensum"
if [ -z "$workdir" ]; then
    workdir="${TMPDIR:-/tmp}/aios-lab-build-f$files-s$scale-r$seed-g$gensum"
fi

ensure_tree() {
    if [ -f "$workdir/.aios-build-stamp" ] && [ "$(cat "$workdir/.aios-build-stamp")" = "$stamp" ]; then
        return 0
    fi
    if [ -d "$workdir" ] && [ ! -f "$workdir/.aios-build-stamp" ] && [ -n "$(ls -A "$workdir")" ]; then
        die "$workdir is not empty and holds no generated tree; refusing to overwrite it"
    fi
    parent=$(dirname "$workdir")
    mkdir -p "$parent" || die "cannot create $parent"
    tmp=$(mktemp -d "$workdir.gen.XXXXXX") || die "cannot create a temporary directory next to $workdir"
    chmod 755 "$tmp"
    if ! "$python" "$gen" --out "$tmp" --files "$files" --scale "$scale" --seed "$seed"; then
        rm -rf "$tmp"
        die "generating the tree failed"
    fi
    printf '%s\n' "$stamp" > "$tmp/.aios-build-stamp"
    # Swap in the new tree; a stale one (it has a stamp) or an empty dir goes.
    rm -rf "$workdir"
    if ! mv -T "$tmp" "$workdir" 2>/dev/null; then
        rm -rf "$tmp"
        # Lost a race with a concurrent run.sh: fine if it made the same tree.
        [ "$(cat "$workdir/.aios-build-stamp" 2>/dev/null)" = "$stamp" ] || die "cannot move the tree into $workdir"
    fi
}

ensure_tree
if [ "$mode" = gen ]; then
    printf '%s\n' "$workdir"
    exit 0
fi

# Our own make: not a sub-make of whatever called us (no inherited jobserver).
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS
make -s --no-print-directory -C "$workdir" clean || exit $?
make -s --no-print-directory -C "$workdir" -j "$jobs"
exit $?
