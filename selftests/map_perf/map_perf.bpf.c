// SPDX-License-Identifier: GPL-2.0
/*
 * BPF side of map_perf: on every getpgid() of a benchmark process, update and
 * then delete that process' key in a BPF_F_NO_PREALLOC hash map (the
 * "hash-kmalloc" case: each update allocates an element from the bpf memory
 * allocator, each delete frees one).
 *
 * User space sets the sizes of hmap and src before loading and fills tgids:
 * slot c holds the tgid of the benchmark process pinned to CPU c, so events
 * of any other process are ignored with one inlined array lookup.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include "map_perf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192); /* --entries */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8); /* --value-size */
} hmap SEC(".maps");

/* The value every update stores, value_size bytes of zeros. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8); /* --value-size */
} src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
} tgids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct mp_count);
} counts SEC(".maps");

SEC("kprobe/__x64_sys_getpgid")
int map_perf_hash_kmalloc(struct pt_regs *regs)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 key = (__u32)id, zero = 0;
	struct mp_count *count;
	__u32 *tgid;
	void *value;

	tgid = bpf_map_lookup_elem(&tgids, &cpu);
	if (!tgid || *tgid != id >> 32)
		return 0;
	count = bpf_map_lookup_elem(&counts, &cpu);
	value = bpf_map_lookup_elem(&src, &zero);
	if (!count || !value)
		return 0;
	if (bpf_map_update_elem(&hmap, &key, value, BPF_ANY))
		count->update_errors++;
	if (bpf_map_delete_elem(&hmap, &key))
		count->delete_errors++;
	count->events++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
