#!/bin/sh
# The guest is usable for kernel tests: the mounts, BPF and tracing support
# the project's programs rely on.  Prints KTAP.
echo "KTAP version 1"
echo "1..5"

n=0
check() {
	n=$((n + 1))
	desc=$1
	shift
	if "$@" >/dev/null 2>&1; then
		echo "ok $n $desc"
	else
		echo "not ok $n $desc"
	fi
}

check kernel_release test -n "$(uname -r)"
check bpffs_mounted grep -q " /sys/fs/bpf bpf " /proc/mounts
check tracefs_mounted grep -q " /sys/kernel/tracing tracefs " /proc/mounts
check kprobe_events test -e /sys/kernel/tracing/kprobe_events
check bpf_jit_enabled grep -q 1 /proc/sys/net/core/bpf_jit_enable
