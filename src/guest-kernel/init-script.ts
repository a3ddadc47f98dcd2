/**
 * /init of the pyro initramfs (busybox sh). It loads the virtio drivers the Debian cloud kernel
 * ships as modules (runtime-facts G2), mounts the root disk, copies the agent onto a tmpfs /run so
 * environment images never need to contain it, and hands PID 1 to the agent.
 * Failures print a PYRO-INIT-FAILED line on the console, which the host turns into a clear error.
 */
export const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() {
  echo "PYRO-INIT-FAILED: $*" > /dev/console
  poweroff -f
  sleep 3600
}
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in *" pyro.probe=1 "*) echo "PYRO-PROBE-OK" > /dev/console; poweroff -f; sleep 3600;; esac
for m in $(cat /modules/base.list); do insmod "/modules/$m.ko" || fail "cannot load kernel module $m"; done
# Memory return (virtio-balloon): optional; a guest without it only keeps the pages it touched.
for m in $(cat /modules/memory.list 2>/dev/null); do insmod "/modules/$m.ko" || echo "pyro-init: cannot load $m" > /dev/console; done
case "$cmdline" in *" pyro.net=1 "*)
  for m in $(cat /modules/net.list); do insmod "/modules/$m.ko" || fail "cannot load kernel module $m"; done;;
esac
flags=rw,noatime
for word in $cmdline; do case "$word" in pyro.rootflags=*) flags="\${word#pyro.rootflags=}";; esac; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ $i -gt 5000 ] && fail "the root disk /dev/vda did not appear"
  usleep 2000
done
mount -t ext4 -o "$flags" /dev/vda /newroot || fail "cannot mount the root filesystem (corrupt environment image?)"
[ -d /newroot/run ] && [ -d /newroot/proc ] && [ -d /newroot/dev ] || fail "the root filesystem is not a Linux root (missing /run, /proc or /dev)"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || fail "cannot mount /run"
mkdir -p /newroot/run/pyro
cp /pyro-agent /newroot/run/pyro/agent || fail "cannot install the agent"
mount --move /dev /newroot/dev && mount --move /proc /newroot/proc && mount --move /sys /newroot/sys || fail "cannot move mounts"
exec switch_root /newroot /run/pyro/agent
`;

/** Busybox applets /init uses; the initramfs gets a symlink for each. */
export const INIT_APPLETS = ["sh", "mount", "mkdir", "insmod", "cat", "usleep", "sleep", "cp", "switch_root", "poweroff"] as const;

/** Modules always loaded (block disk + agent port) and the extra ones for a NIC, by module name. */
export const BASE_MODULES = ["virtio_mmio", "virtio_blk", "virtio_console"] as const;
export const NET_MODULES = ["virtio_net"] as const;
