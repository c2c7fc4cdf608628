#!/bin/sh
# Build workloads/wakeup/wakeup.c once into the build tree (rebuilt when the
# source is newer), then run it with the given arguments.
# usage: run.sh [build] | run.sh run [wakeup options]
set -u
here=$(cd "$(dirname "$0")" && pwd) || exit 2
out="${AIOS_LAB_BUILD:-$here/../../build}/workloads/wakeup"
if [ ! -x "$out" ] || [ "$here/wakeup.c" -nt "$out" ]; then
	mkdir -p "$(dirname "$out")" || exit 2
	gcc -O2 -Wall -Werror -pthread -o "$out.tmp.$$" "$here/wakeup.c" && mv "$out.tmp.$$" "$out" || exit 2
fi
[ "${1:-build}" = run ] || exit 0
shift
exec "$out" "$@"
