/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared between htab_reuse.bpf.c and htab_reuse.c: the layout of the
 * program's configuration (.rodata) and of its counters (.bss).  Each is one
 * struct so that user space finds it at offset 0 of the section without a
 * skeleton.
 */
#ifndef HTAB_REUSE_H
#define HTAB_REUSE_H

/* Largest value the BPF programs handle: 8 bytes of header + 8 KiB of words. */
#define HR_MAX_WORDS 1024

/* The start of every test-run packet. */
struct hr_pkt {
	__u32 key;
	__u32 key2;  /* hr_churn: the other key of the pair, or key */
	__u32 flags; /* hr_churn: HR_CHURN_* */
	__u32 slot;  /* hr_churn with HR_CHURN_FULL: the churn thread's scratch slot */
};

#define HR_CHURN_WRITE 1 /* a locked write right after the re-insert */
/*
 * The re-insert stores a full, valid value (every word hr_word() of one
 * fresh sequence number, built in scratch[slot]) instead of the zero fill.
 */
#define HR_CHURN_FULL 2

/*
 * A word of a locked write (and of a full insert): its sequence number
 * (1..2^32-1) in the low half, the complement in the high half.  The
 * insert's unlocked fill writes zeros, possibly byte by byte (rep movsb): a
 * word it tears has some bytes zeroed, which never gives a valid word of
 * another sequence number (a zeroed low byte would need an 0xff high byte,
 * which the fill cannot write).  A full insert's copy torn byte by byte, in
 * address order, over the word of another write leaves a word that is
 * either invalid or the whole word of one of the two writes.
 */
static inline __u32 hr_seq(__u64 counter)
{
	return counter % 0xffffffffULL + 1;
}

static inline __u64 hr_word(__u32 seq)
{
	return (__u64)(__u32)~seq << 32 | seq;
}

/* The sequence number of a valid word, else 0. */
static inline __u32 hr_word_seq(__u64 w)
{
	return (__u32)(w >> 32) == (__u32)~(__u32)w ? (__u32)w : 0;
}

struct hr_cfg {
	__u32 nwords; /* words[] entries in a map value */
	__u32 pad;
};

struct hr_stats {
	__u64 next_seq; /* last sequence number handed out to a locked write */
	/* hr_write: locked writes */
	__u64 writes;
	__u64 write_misses; /* key not in the map */
	/* a locked writer found two different locked writes in the value */
	__u64 torn;
	__u64 torn_a;
	__u64 torn_b;
	__u64 torn_key;
	/* hr_lookup: plain lookups that check the embedded key */
	__u64 lookups;
	__u64 lookup_misses;
	__u64 mismatches;
	__u64 mm_expected;
	__u64 mm_got;
	__u64 sink; /* keeps the word reads of hr_lookup */
	/* hr_churn */
	__u64 churn_deletes;
	__u64 churn_inserts;
	__u64 churn_errors;
};

#endif
