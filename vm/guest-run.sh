#!/bin/sh
# Runs inside the guest as virtme-ng's --exec command, as root.
#
# virtme-ng finds its own script I/O ports through /dev/virtio-ports/*, links
# that only udev creates; the host's root filesystem (which the guest runs)
# may have no udev, and running udev under TCG costs ~30 s of boot. So the
# host adds two ports of ours (aios.output, aios.exit) and we find them here
# by name in sysfs. The kernel console stays a separate stream on the host,
# which is how panics and oopses are told apart from the command's output.
rundir="$1"
out=""; ret=""
for d in /sys/class/virtio-ports/*; do
    case "$(cat "$d/name" 2>/dev/null)" in
        aios.output) out="/dev/${d##*/}" ;;
        aios.exit) ret="/dev/${d##*/}" ;;
    esac
done
if [ -z "$out" ] || [ -z "$ret" ]; then
    echo "aios-lab guest: virtio ports aios.output/aios.exit not found" > /dev/kmsg
    exit 125
fi
# BPF and tracing filesystems: the controller and the collectors need them.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# The running kernel's config where libbpf looks for it (/boot/config-REL;
# the pinned kernel has no /proc/config.gz): Debian 13 installs it beside the
# modules, and the guest runs the host's /boot, which lacks it. BPF objects
# with __kconfig externs (the kernel's scx_central) fail to load without it.
rel="$(uname -r)"
if [ ! -e "/boot/config-$rel" ] && [ -e "/lib/modules/$rel/config" ]; then
    mount -t tmpfs -o size=4m,mode=0755 tmpfs /boot 2>/dev/null &&
        cp "/lib/modules/$rel/config" "/boot/config-$rel"
fi
. "$rundir/env.sh"
cd "$AIOS_GUEST_CWD" 2>/dev/null || cd /
cut -d' ' -f1 /proc/uptime > "$rundir/guest-start"
sh "$rundir/cmd.sh" > "$out" 2>&1 < /dev/null
rc=$?
cut -d' ' -f1 /proc/uptime > "$rundir/guest-end"
sync
echo "$rc" > "$ret"
