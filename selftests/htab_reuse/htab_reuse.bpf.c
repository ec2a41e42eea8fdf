// SPDX-License-Identifier: GPL-2.0
/*
 * BPF side of htab_reuse.  The programs are tc (SCHED_CLS) programs that user
 * space runs on demand with BPF_PROG_TEST_RUN; the packet starts with a
 * struct hr_pkt.  tc programs, unlike kprobe and socket filter programs, may
 * use bpf_spin_lock, and their test runs loop in the kernel (repeat) without
 * the XDP dispatcher update that makes XDP test runs with repeat > 1 slow.
 *
 * The map is created by user space (BPF_F_NO_PREALLOC hash, value
 * { struct bpf_spin_lock lock; __u32 key; __u64 words[nwords]; } described by
 * user-built BTF) and handed to this object with bpf_map__reuse_fd(), so the
 * value size is chosen at run time; cfg.nwords (read-only data, a known
 * constant for the verifier) bounds every access.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "htab_reuse.h"

struct hr_value {
	struct bpf_spin_lock lock;
	__u32 key;
	__u64 words[HR_MAX_WORDS]; /* only cfg.nwords of them exist */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16); /* replaced by the map user space creates */
} vals SEC(".maps");

/*
 * fills[k]: what an insert of key k stores, the "unlocked fill": key k, all
 * words 0 (user space sets key and size).  Never written by the programs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16);
} fills SEC(".maps");

/*
 * scratch[slot]: where churn thread `slot` builds a full value (HR_CHURN_FULL)
 * before inserting it; one slot per churn thread, so no two program runs
 * build in the same place at once (user space sets size and entries).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16);
} scratch SEC(".maps");

const volatile struct hr_cfg cfg = { .nwords = 1 };
struct hr_stats stats;

static __always_inline struct hr_pkt *packet(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (data + sizeof(struct hr_pkt) > end)
		return NULL;
	return data;
}

/* ~0 when x != 0, else 0, without a branch (the asm hides the idiom from the
 * compiler, which would turn it back into compare-and-branch). */
static __always_inline __u64 nonzero_mask(__u64 x)
{
	__u64 neg = -x, mask;

	asm volatile("" : "+r"(neg));
	mask = -((neg | x) >> 63);
	asm volatile("" : "+r"(mask));
	return mask;
}

/*
 * A locked write of key: every word of the value becomes one fresh sequence
 * number, stored as hr_word(seq) (see htab_reuse.h: a word torn by the
 * insert's unlocked fill, which may copy byte by byte, never passes for
 * another sequence number).  While it holds the lock it also checks what the
 * previous writers left: a value holding two different valid sequence numbers
 * was written by two locked writers at once, which a working bpf_spin_lock
 * rules out.  Zero and invalid words are the unlocked fill racing a locked
 * write, which is no bug.
 *
 * The loop has no branch but its bound: with one, the verifier would follow
 * every combination of outcomes over hundreds of iterations.
 */
static __always_inline void locked_write(__u32 key)
{
	__u64 word, w, m, d, first = 0, other = 0;
	__u32 i, n = cfg.nwords;
	struct hr_value *v;

	v = bpf_map_lookup_elem(&vals, &key);
	if (!v) {
		__sync_fetch_and_add(&stats.write_misses, 1);
		return;
	}
	word = hr_word(hr_seq(__sync_fetch_and_add(&stats.next_seq, 1)));

	bpf_spin_lock(&v->lock);
	for (i = 0; i < HR_MAX_WORDS && i < n; i++) {
		w = v->words[i];
		/* ~0 when w is a valid hr_word() */
		m = ~nonzero_mask((w >> 32) ^ (w & 0xffffffff) ^ 0xffffffff);
		first |= w & m & ~nonzero_mask(first); /* the first valid word */
		d = nonzero_mask(first ^ w) & m;       /* valid and not first */
		other = (w & d) | (other & ~d);
		v->words[i] = word;
	}
	bpf_spin_unlock(&v->lock);

	__sync_fetch_and_add(&stats.writes, 1);
	if (other) {
		stats.torn_a = first & 0xffffffff;
		stats.torn_b = other & 0xffffffff;
		stats.torn_key = key;
		__sync_fetch_and_add(&stats.torn, 1);
	}
}

/* hr_pkt.key: a locked write. */
SEC("tc")
int hr_write(struct __sk_buff *skb)
{
	struct hr_pkt *p = packet(skb);

	if (p)
		locked_write(p->key);
	return TC_ACT_OK;
}

/*
 * A full, valid value of key in scratch[slot]: every word hr_word() of one
 * fresh sequence number, what an insert of HR_CHURN_FULL stores.
 */
static __always_inline void *full_value(__u32 slot, __u32 key)
{
	__u32 i, n = cfg.nwords;
	struct hr_value *v;
	__u64 word;

	v = bpf_map_lookup_elem(&scratch, &slot);
	if (!v)
		return NULL;
	word = hr_word(hr_seq(__sync_fetch_and_add(&stats.next_seq, 1)));
	v->key = key;
	for (i = 0; i < HR_MAX_WORDS && i < n; i++)
		v->words[i] = word;
	return v;
}

/*
 * Churn: delete a key and insert one with a plain update (no BPF_F_LOCK, so a
 * new element: the one just freed on this CPU, if the allocator reuses it).
 * hr_pkt.key2 == key: delete and re-insert key, then (HR_CHURN_WRITE) write
 * it under its lock at once, while a reader that held the old element may
 * still be copying it.  key2 != key: whichever of the two is in the map is
 * deleted and the other inserted, so a reused element changes keys.  The
 * insert stores fills[key] (zeros), or with HR_CHURN_FULL a full value of
 * a fresh sequence number: the update copies it into the new element
 * without taking the element's lock, which is right for an element nobody
 * can see yet, and wrong for one a reader still holds.
 */
SEC("tc")
int hr_churn(struct __sk_buff *skb)
{
	struct hr_pkt *p = packet(skb);
	__u32 del, add;
	void *fill;

	if (!p)
		return TC_ACT_OK;
	del = p->key;
	add = p->key2;
	if (!bpf_map_delete_elem(&vals, &del)) {
		__sync_fetch_and_add(&stats.churn_deletes, 1);
	} else if (del != add) {
		del = p->key2;
		add = p->key;
		if (!bpf_map_delete_elem(&vals, &del))
			__sync_fetch_and_add(&stats.churn_deletes, 1);
	}
	if (p->flags & HR_CHURN_FULL)
		fill = full_value(p->slot, add);
	else
		fill = bpf_map_lookup_elem(&fills, &add);
	if (!fill)
		return TC_ACT_OK;
	if (bpf_map_update_elem(&vals, &add, fill, BPF_ANY))
		__sync_fetch_and_add(&stats.churn_errors, 1);
	else
		__sync_fetch_and_add(&stats.churn_inserts, 1);
	if (p->flags & HR_CHURN_WRITE)
		locked_write(add);
	return TC_ACT_OK;
}

/*
 * A plain lookup that checks the element it got still belongs to its key:
 * the value embeds its key, read before and after reading every word (which
 * keeps the element in use for a while, as a real reader would).  A different
 * key means the element was freed and reused for another key while this
 * program still held it.
 */
SEC("tc")
int hr_lookup(struct __sk_buff *skb)
{
	struct hr_pkt *p = packet(skb);
	__u32 key, i, k1, k2, n = cfg.nwords;
	struct hr_value *v;
	__u64 sum = 0;

	if (!p)
		return TC_ACT_OK;
	key = p->key;
	v = bpf_map_lookup_elem(&vals, &key);
	if (!v) {
		__sync_fetch_and_add(&stats.lookup_misses, 1);
		return TC_ACT_OK;
	}
	k1 = *(volatile __u32 *)&v->key;
	for (i = 0; i < HR_MAX_WORDS && i < n; i++)
		sum += *(volatile __u64 *)&v->words[i];
	k2 = *(volatile __u32 *)&v->key;

	__sync_fetch_and_add(&stats.lookups, 1);
	stats.sink = sum;
	if (k1 != key || k2 != key) {
		stats.mm_expected = key;
		stats.mm_got = k1 != key ? k1 : k2;
		__sync_fetch_and_add(&stats.mismatches, 1);
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
