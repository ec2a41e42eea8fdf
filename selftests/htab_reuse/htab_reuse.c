// SPDX-License-Identifier: GPL-2.0
/*
 * htab_reuse: stress element reuse in a BPF_F_NO_PREALLOC hash map whose
 * value is { struct bpf_spin_lock lock; __u32 key; __u64 words[N]; } and look
 * for the two problems of "bpf: Handle reuse in bpf memory alloc" (problem 2
 * twice: for another key, and for the same key under BPF_F_LOCK).  The BPF
 * programs (htab_reuse.bpf.c, tc programs run with BPF_PROG_TEST_RUN from
 * threads pinned to CPUs) and the map (created here, with BTF built here so
 * that the kernel sees the bpf_spin_lock) are set up afresh for each subtest.
 *
 * lock_integrity (problem 1)
 *   Writer threads run hr_write: every word of the value becomes one fresh
 *   sequence number, under the value's bpf_spin_lock.  Reader threads read
 *   the value with BPF_F_LOCK (copied under the same lock).  Churn threads
 *   run hr_churn: delete the key, re-insert it with a plain update (a new
 *   element: the one just freed, when the allocator reuses at once; its
 *   words are the unlocked fill, zeros) and write it under its lock at once.
 *   If the allocator re-initialises the lock of a reused element while a
 *   reader or writer holds it, two lock holders overlap: a locked read (the
 *   reader's, or the check every writer makes under the lock before it
 *   writes) sees words of two different locked writes.  Only that counts.
 *   The unlocked fill racing a locked read is not problem 1 (it happens on
 *   kernels that never touch the lock: it is problem 2, which
 *   same_key_reuse shows): it leaves zero words, or words torn byte by
 *   byte, and such words are never taken for a sequence number (see
 *   hr_word()); reads that show them are merely counted (fill_mixes).
 *
 * lookup_identity (problem 2)
 *   Reader threads run hr_lookup: a plain lookup, then the value's embedded
 *   key is compared with the key looked up, before and after reading all
 *   the words.  Churn threads run hr_churn on a pair of keys: delete the one
 *   in the map, insert the other, so a reused element comes back under a
 *   different key.  A reader that sees another key held an element that was
 *   freed and reused under it.
 *
 * same_key_reuse (problem 2 as a BPF_F_LOCK user sees it)
 *   As lock_integrity (locked writers, BPF_F_LOCK readers, churn deleting
 *   and re-inserting one key), except that every re-insert stores a full,
 *   valid value: every word is hr_word() of one fresh sequence number, as a
 *   locked write's.  So every value ever written is one number throughout,
 *   and a locked read of a live element, or of a deleted one that nobody
 *   reused, returns one number throughout (the insert copies its value
 *   before the element can be found).  When the allocator hands the element
 *   a reader is still copying under its lock to the re-insert of the same
 *   key, the insert copies its value in without that lock: the read returns
 *   words of two writes of the key (or a word torn between them), a value no
 *   single update wrote.  Any such read fails the subtest, whatever the
 *   kernel does to the lock; a locked BPF writer that finds two numbers
 *   under the lock fails it too.  One key by default, so every reuse the
 *   readers can meet is a reuse for the same key.
 *
 * --churn=syscall does the churn with bpf(2) delete + update calls from user
 * space instead (slower, and without the immediate locked write).
 *
 * --test=NAME runs one subtest only (the others are not in the plan).
 *
 * Prints KTAP; exits 0 once the KTAP is printed (the verdicts are in it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "../lib/common.h"
#include "htab_reuse.h"

#define OBJ_NAME "htab_reuse.bpf.o"
#define PKT_SIZE 64 /* skb test runs need at least an Ethernet header */
#define POLL_NS 1000000ULL
#define JOIN_GRACE_S 5

enum test_id { LOCK_INTEGRITY, LOOKUP_IDENTITY, SAME_KEY_REUSE, NR_TESTS };
static const char *const test_names[NR_TESTS] = { "lock_integrity", "lookup_identity",
						  "same_key_reuse" };

/* The subtests whose readers use BPF_F_LOCK and whose writers write under the lock. */
static bool locked(enum test_id test)
{
	return test == LOCK_INTEGRITY || test == SAME_KEY_REUSE;
}

struct options {
	double duration;
	unsigned int value_size;
	int threads;
	int churners, readers, writers; /* -1: the subtest's default */
	int keys;			/* 0: the subtest's default */
	int repeat;
	bool syscall_churn;
	bool run[NR_TESTS];
};

/* The detection shared by every thread of one subtest: the first one wins. */
struct detection {
	pthread_mutex_t lock;
	bool found;
	double seconds;
	char what[256];
};

struct run {
	const struct options *opt;
	enum test_id test;
	int map_fd, fills_fd;
	unsigned int nchurn; /* churn threads: scratch slots */
	int write_fd, churn_fd, lookup_fd; /* program fds */
	volatile struct hr_stats *stats;
	unsigned int nwords, nkeys;
	int ncpus;
	double start;
	atomic_int stop;
	struct detection det;
	/* counters of the user-space threads */
	atomic_ullong locked_reads, read_misses, fill_mixes, churn_ops, churn_errors;
	atomic_ullong torn_reads; /* same_key_reuse: reads of no single write */
	atomic_int run_errors;
};

enum role { CHURN, READ, WRITE, NR_ROLES };

struct worker {
	struct run *run;
	pthread_t tid;
	enum role role;
	int index, cpu;
	bool started;
};

static void detect(struct run *r, const char *fmt, ...)
{
	double t = now() - r->start;
	va_list ap;

	pthread_mutex_lock(&r->det.lock);
	if (!r->det.found) {
		r->det.found = true;
		r->det.seconds = t;
		va_start(ap, fmt);
		vsnprintf(r->det.what, sizeof(r->det.what), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&r->det.lock);
	atomic_store(&r->stop, 1);
}

/* Checks the counters the BPF programs keep for a detection. */
static void check_bpf(struct run *r)
{
	if (r->test == LOCK_INTEGRITY && r->stats->torn)
		detect(r, "torn locked value: seq %llu and seq %llu (key %llu, seen by a locked BPF writer)",
		       (unsigned long long)r->stats->torn_a, (unsigned long long)r->stats->torn_b,
		       (unsigned long long)r->stats->torn_key);
	if (r->test == SAME_KEY_REUSE && r->stats->torn)
		detect(r, "locked BPF write of key %llu found two writes under the lock: seq %llu and seq %llu",
		       (unsigned long long)r->stats->torn_key, (unsigned long long)r->stats->torn_a,
		       (unsigned long long)r->stats->torn_b);
	if (r->test == LOOKUP_IDENTITY && r->stats->mismatches)
		detect(r, "lookup of key %llu returned the element of key %llu",
		       (unsigned long long)r->stats->mm_expected,
		       (unsigned long long)r->stats->mm_got);
}

static void run_error(struct run *r, const char *what, int err)
{
	/* Report the first few only; a broken setup would flood the output. */
	if (atomic_fetch_add(&r->run_errors, 1) < 3)
		diag("%s: %s", what, strerror(err));
}

static bool stopped(struct run *r)
{
	return atomic_load_explicit(&r->stop, memory_order_relaxed);
}

/* The packet of a worker's n-th test run. */
static void packet_for(struct worker *w, unsigned int n, struct hr_pkt *p)
{
	struct run *r = w->run;

	memset(p, 0, sizeof(*p));
	if (w->role != CHURN) {
		p->key = (w->index + n) % r->nkeys;
	} else if (r->test == LOCK_INTEGRITY) {
		/* delete and re-insert one key, then write it under its lock */
		p->key = p->key2 = (w->index + n) % r->nkeys;
		p->flags = HR_CHURN_WRITE;
	} else if (r->test == SAME_KEY_REUSE) {
		/* delete and re-insert one key with a full value of its own */
		p->key = p->key2 = (w->index + n) % r->nkeys;
		p->flags = HR_CHURN_FULL;
		p->slot = w->index;
	} else {
		/* keys 2i and 2i+1 belong to churn thread i; one of them is in the map */
		p->key = 2 * w->index;
		p->key2 = 2 * w->index + 1;
	}
}

/* Runs a program on this worker's packets, `repeat` times per system call. */
static void test_run_loop(struct worker *w, int prog_fd)
{
	struct run *r = w->run;
	unsigned char pkt[PKT_SIZE] = { 0 };
	unsigned int n;

	for (n = 0; !stopped(r); n++) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = sizeof(pkt),
			    .repeat = r->opt->repeat);

		packet_for(w, n, (struct hr_pkt *)pkt);
		if (bpf_prog_test_run_opts(prog_fd, &o)) {
			run_error(r, "BPF_PROG_TEST_RUN", errno);
			break;
		}
		check_bpf(r);
	}
}

/*
 * same_key_reuse: every value written is one sequence number throughout, so
 * a locked read is sound only if its words are one valid word repeated.
 * Two numbers (or a word that is no valid word: one torn between two
 * writes, or a zero) mean the read returned no single write of key.  Detects
 * and returns true for such a read.
 */
static bool same_key_torn(struct run *r, __u32 key, const __u64 *words)
{
	unsigned int i, n = 0, first = 0;
	__u32 a = 0, b;

	for (i = 0; i < r->nwords && !a; i++)
		a = hr_word_seq(words[i]); /* the first valid word's number */
	for (i = 0; i < r->nwords; i++) {
		if (a && words[i] == hr_word(a))
			continue;
		if (!n++)
			first = i;
	}
	if (!n)
		return false;
	atomic_fetch_add_explicit(&r->torn_reads, 1, memory_order_relaxed);
	b = hr_word_seq(words[first]);
	if (b)
		detect(r, "BPF_F_LOCK read of key %u returned two writes: seq %u and seq %u (word %u; %u of %u words not seq %u)",
		       key, a, b, first, n, r->nwords, a);
	else if (a)
		detect(r, "BPF_F_LOCK read of key %u returned seq %u and word %u = %#llx, torn or zero (%u of %u words not seq %u)",
		       key, a, first, (unsigned long long)words[first], n, r->nwords, a);
	else
		detect(r, "BPF_F_LOCK read of key %u returned no valid word (word 0 = %#llx)", key,
		       (unsigned long long)words[0]);
	return true;
}

/* Locked reads from user space: BPF_F_LOCK copies the value under its lock. */
static void locked_read_loop(struct worker *w)
{
	struct run *r = w->run;
	unsigned int n;
	unsigned char *buf = malloc(r->opt->value_size);
	const __u64 *words = (const __u64 *)(buf + 8);

	if (!buf)
		return;
	for (n = 0; !stopped(r); n++) {
		__u32 key = (w->index + n) % r->nkeys;
		__u32 a = 0, b = 0, seq;
		bool fill = false;
		unsigned int i;

		if (bpf_map_lookup_elem_flags(r->map_fd, &key, buf, BPF_F_LOCK)) {
			if (errno != ENOENT) {
				run_error(r, "lookup with BPF_F_LOCK", errno);
				break;
			}
			atomic_fetch_add_explicit(&r->read_misses, 1, memory_order_relaxed);
			continue;
		}
		atomic_fetch_add_explicit(&r->locked_reads, 1, memory_order_relaxed);
		if (r->test == SAME_KEY_REUSE) {
			if (same_key_torn(r, key, words))
				break;
			continue;
		}
		/* Two different valid words: two locked writes in one locked read.
		 * Zero or torn words are the insert's unlocked fill: a race that
		 * is not a bug. */
		for (i = 0; i < r->nwords; i++) {
			seq = hr_word_seq(words[i]);
			if (!seq)
				fill = true;
			else if (!a)
				a = seq;
			else if (seq != a) {
				b = seq;
				break;
			}
		}
		if (b) {
			detect(r, "torn locked read: seq %u and seq %u (key %u, seen by a BPF_F_LOCK reader)",
			       a, b, key);
			break;
		}
		if (fill && a)
			atomic_fetch_add_explicit(&r->fill_mixes, 1, memory_order_relaxed);
	}
	free(buf);
}

/* A fresh sequence number from the counter the BPF programs use. */
static __u32 next_seq(struct run *r)
{
	return hr_seq(__atomic_fetch_add(&r->stats->next_seq, 1, __ATOMIC_RELAXED));
}

/* value = key and every word hr_word() of one fresh sequence number. */
static void full_value(struct run *r, __u32 key, unsigned char *value)
{
	__u64 word = hr_word(next_seq(r)), *words = (__u64 *)(value + 8);
	unsigned int i;

	memcpy(value + 4, &key, sizeof(key));
	for (i = 0; i < r->nwords; i++)
		words[i] = word;
}

/* --churn=syscall: hr_churn's work done with two system calls per element. */
static void syscall_churn_loop(struct worker *w)
{
	struct run *r = w->run;
	unsigned char *fill = calloc(1, r->opt->value_size);
	__u32 *fill_key = (__u32 *)(fill + 4);
	unsigned int n;

	if (!fill)
		return;
	for (n = 0; !stopped(r); n++) {
		struct hr_pkt p;
		__u32 del, add;

		packet_for(w, n, &p);
		del = p.key;
		add = p.key2;
		if (bpf_map_delete_elem(r->map_fd, &del) && del != add) {
			del = p.key2;
			add = p.key;
			bpf_map_delete_elem(r->map_fd, &del);
		}
		if (p.flags & HR_CHURN_FULL)
			full_value(r, add, fill);
		else
			*fill_key = add;
		if (bpf_map_update_elem(r->map_fd, &add, fill, BPF_ANY))
			atomic_fetch_add_explicit(&r->churn_errors, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->churn_ops, 1, memory_order_relaxed);
		check_bpf(r);
	}
	free(fill);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;

	pin_to_cpu(w->cpu);
	switch (w->role) {
	case CHURN:
		if (r->opt->syscall_churn)
			syscall_churn_loop(w);
		else
			test_run_loop(w, r->churn_fd);
		break;
	case READ:
		if (locked(r->test))
			locked_read_loop(w);
		else
			test_run_loop(w, r->lookup_fd);
		break;
	case WRITE:
		test_run_loop(w, r->write_fd);
		break;
	default:
		break;
	}
	return NULL;
}

/* The map value's BTF: what makes the kernel see the bpf_spin_lock. */
static struct btf *value_btf(unsigned int nwords, __u32 *key_id, __u32 *value_id)
{
	struct btf *btf = btf__new_empty();
	int u32, u64, lock, arr, val;

	if (!btf)
		return NULL;
	u32 = btf__add_int(btf, "unsigned int", 4, 0);
	u64 = btf__add_int(btf, "long long unsigned int", 8, 0);
	lock = btf__add_struct(btf, "bpf_spin_lock", 4);
	if (u32 < 0 || u64 < 0 || lock < 0 || btf__add_field(btf, "val", u32, 0, 0))
		goto fail;
	arr = btf__add_array(btf, u32, u64, nwords);
	val = btf__add_struct(btf, "htab_reuse_value", 8 + 8 * nwords);
	if (arr < 0 || val < 0 || btf__add_field(btf, "lock", lock, 0, 0) ||
	    btf__add_field(btf, "key", u32, 32, 0) || btf__add_field(btf, "words", arr, 64, 0))
		goto fail;
	if (btf__load_into_kernel(btf))
		goto fail;
	*key_id = u32;
	*value_id = val;
	return btf;
fail:
	btf__free(btf);
	return NULL;
}

static struct bpf_map *internal_map(struct bpf_object *obj, const char *suffix)
{
	struct bpf_map *map;
	size_t n = strlen(suffix);

	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t len = strlen(name);

		if (bpf_map__is_internal(map) && len >= n && !strcmp(name + len - n, suffix))
			return map;
	}
	return NULL;
}

struct setup {
	void *bss;
	size_t bss_size;
	struct btf *btf;
	struct bpf_object *obj;
	int map_fd;
};

static void teardown(struct setup *s)
{
	if (s->bss)
		munmap(s->bss, s->bss_size);
	bpf_object__close(s->obj);
	if (s->map_fd >= 0)
		close(s->map_fd);
	btf__free(s->btf);
}

/* Creates the map and loads the programs; on failure says why in a diagnostic. */
static int setup(struct run *r, struct setup *s)
{
	__u32 key_id, value_id;
	struct bpf_map *map, *fills, *scratch, *rodata, *bss;
	struct hr_cfg *cfg;
	char path[PATH_MAX];
	size_t size;
	int err;

	memset(s, 0, sizeof(*s));
	s->map_fd = -1;
	s->btf = value_btf(r->nwords, &key_id, &value_id);
	if (!s->btf) {
		diag("loading the value's BTF: %s", strerror(errno));
		return -1;
	}
	{
		LIBBPF_OPTS(bpf_map_create_opts, mo, .btf_fd = btf__fd(s->btf),
			    .btf_key_type_id = key_id, .btf_value_type_id = value_id,
			    .map_flags = BPF_F_NO_PREALLOC);

		/* Room for every key plus the ones in flight. */
		s->map_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "htab_reuse", sizeof(__u32),
					   r->opt->value_size, 2 * r->nkeys + 64, &mo);
	}
	if (s->map_fd < 0) {
		diag("creating the hash map: %s", strerror(errno));
		return -1;
	}
	err = path_beside_exe(path, sizeof(path), OBJ_NAME);
	if (err) {
		diag("locating %s: %s", OBJ_NAME, strerror(-err));
		return -1;
	}
	s->obj = bpf_object__open_file(path, NULL);
	if (!s->obj) {
		diag("opening %s: %s", path, strerror(errno));
		return -1;
	}
	map = bpf_object__find_map_by_name(s->obj, "vals");
	fills = bpf_object__find_map_by_name(s->obj, "fills");
	scratch = bpf_object__find_map_by_name(s->obj, "scratch");
	rodata = internal_map(s->obj, ".rodata");
	bss = internal_map(s->obj, ".bss");
	if (!map || !fills || !scratch || !rodata || !bss) {
		diag("%s lacks the map vals, fills, scratch, .rodata or .bss", path);
		return -1;
	}
	if (bpf_map__set_max_entries(fills, r->nkeys) ||
	    bpf_map__set_value_size(fills, r->opt->value_size) ||
	    bpf_map__set_max_entries(scratch, r->nchurn ? r->nchurn : 1) ||
	    bpf_map__set_value_size(scratch, r->opt->value_size)) {
		diag("sizing the maps fills and scratch failed");
		return -1;
	}
	err = bpf_map__reuse_fd(map, s->map_fd);
	if (err) {
		diag("bpf_map__reuse_fd: %s", strerror(-err));
		return -1;
	}
	cfg = (struct hr_cfg *)bpf_map__initial_value(rodata, &size);
	if (!cfg || size < sizeof(*cfg)) {
		diag(".rodata is not accessible");
		return -1;
	}
	cfg->nwords = r->nwords;
	err = bpf_object__load(s->obj);
	if (err) {
		diag("loading %s: %s (the verifier's log is on stderr)", path, strerror(-err));
		return -1;
	}
	/* Without a skeleton, libbpf keeps its own copy: map the kernel's. */
	s->bss_size = bpf_map__value_size(bss);
	if (!(bpf_map__map_flags(bss) & BPF_F_MMAPABLE) || s->bss_size < sizeof(struct hr_stats)) {
		diag(".bss cannot be memory-mapped");
		return -1;
	}
	s->bss = mmap(NULL, s->bss_size, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(bss), 0);
	if (s->bss == MAP_FAILED) {
		s->bss = NULL;
		diag("mmap of .bss: %s", strerror(errno));
		return -1;
	}
	r->stats = s->bss;
	r->map_fd = s->map_fd;
	r->fills_fd = bpf_map__fd(fills);
	r->write_fd = bpf_program__fd(bpf_object__find_program_by_name(s->obj, "hr_write"));
	r->churn_fd = bpf_program__fd(bpf_object__find_program_by_name(s->obj, "hr_churn"));
	r->lookup_fd = bpf_program__fd(bpf_object__find_program_by_name(s->obj, "hr_lookup"));
	if (r->write_fd < 0 || r->churn_fd < 0 || r->lookup_fd < 0) {
		diag("%s lacks hr_write, hr_churn or hr_lookup", path);
		return -1;
	}
	return 0;
}

/*
 * fills[k] = the fill pattern of key k (key k, words all 0); the keys in the
 * map to begin with (lookup_identity: key 2i of each churn pair), with that
 * fill, or (same_key_reuse) with a full value of a fresh sequence number.
 */
static int populate(struct run *r)
{
	unsigned char *fill = calloc(1, r->opt->value_size);
	unsigned int k;
	int err = 0;

	if (!fill)
		return -ENOMEM;
	for (k = 0; k < r->nkeys && !err; k++) {
		__u32 key = k;

		memset(fill, 0, r->opt->value_size);
		memcpy(fill + 4, &key, sizeof(key));
		if (bpf_map_update_elem(r->fills_fd, &key, fill, BPF_ANY))
			err = -errno;
		if (r->test == SAME_KEY_REUSE)
			full_value(r, key, fill);
		if (!err && (r->test != LOOKUP_IDENTITY || k % 2 == 0) &&
		    bpf_map_update_elem(r->map_fd, &key, fill, BPF_ANY))
			err = -errno;
	}
	if (err)
		diag("filling the maps: %s", strerror(-err));
	free(fill);
	return err;
}

static bool join_all(struct worker *w, int n)
{
	struct timespec deadline;
	bool all = true;
	int i;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += JOIN_GRACE_S;
	for (i = 0; i < n; i++)
		if (w[i].started && pthread_timedjoin_np(w[i].tid, NULL, &deadline))
			all = false;
	return all;
}

/*
 * Runs one subtest and prints its result line.  Returns false when worker
 * threads did not come back from the kernel (a wedged kernel): the caller
 * must not start anything else.
 */
static bool run_test(const struct options *opt, enum test_id test, int number)
{
	struct run *r = calloc(1, sizeof(*r));
	int count[NR_ROLES], nworkers = 0, i, j;
	struct worker *w;
	struct setup s;
	bool joined, failed;
	double elapsed;

	if (!r)
		return false;
	r->opt = opt;
	r->test = test;
	pthread_mutex_init(&r->det.lock, NULL);
	r->ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	r->nwords = (opt->value_size - 8) / 8;
	count[CHURN] = opt->churners >= 0 ? opt->churners : opt->threads;
	count[READ] = opt->readers >= 0 ? opt->readers : opt->threads;
	count[WRITE] = !locked(test) ? 0 : opt->writers >= 0 ? opt->writers : opt->threads;
	r->nchurn = count[CHURN];
	if (locked(test))
		r->nkeys = opt->keys ? opt->keys : 1;
	else
		r->nkeys = 2 * (count[CHURN] ? count[CHURN] : 1); /* a pair per churn thread */
	w = calloc(count[CHURN] + count[READ] + count[WRITE], sizeof(*w));
	if (!w)
		return false;

	diag("%s: value_size=%u words=%u keys=%u cpus=%d churn=%d%s readers=%d writers=%d repeat=%d duration=%gs",
	     test_names[test], opt->value_size, r->nwords, r->nkeys, r->ncpus, count[CHURN],
	     opt->syscall_churn ? " (syscalls)" : "", count[READ], count[WRITE], opt->repeat,
	     opt->duration);
	if (setup(r, &s) || populate(r)) {
		printf("not ok %d %s # setup did not complete\n", number, test_names[test]);
		fflush(stdout);
		teardown(&s);
		return true;
	}

	/* Thread i of a role runs on CPU i (churn: i + 1), modulo the CPUs: the
	 * churn of one CPU races the readers and writers of another. */
	for (j = 0; j < NR_ROLES; j++) {
		for (i = 0; i < count[j]; i++, nworkers++) {
			w[nworkers].run = r;
			w[nworkers].role = j;
			w[nworkers].index = i;
			w[nworkers].cpu = (i + (j == CHURN)) % r->ncpus;
		}
	}
	r->start = now();
	for (i = 0; i < nworkers; i++)
		w[i].started = !pthread_create(&w[i].tid, NULL, worker_main, &w[i]);

	while (!atomic_load(&r->stop) && now() - r->start < opt->duration) {
		struct timespec ts = { 0, POLL_NS };

		nanosleep(&ts, NULL);
		check_bpf(r);
		if (atomic_load(&r->run_errors))
			break;
	}
	elapsed = now() - r->start;
	atomic_store(&r->stop, 1);
	check_bpf(r);
	pthread_mutex_lock(&r->det.lock);
	failed = r->det.found;
	pthread_mutex_unlock(&r->det.lock);

	/* The verdict goes out before the join: a wedged kernel may keep threads. */
	printf("# metric: run_seconds %.3f\n", elapsed);
	if (locked(test)) {
		printf("# metric: locked_reads %llu\n", (unsigned long long)r->locked_reads);
		printf("# metric: read_misses %llu\n", (unsigned long long)r->read_misses);
		if (test == LOCK_INTEGRITY)
			printf("# metric: fill_mixes %llu\n", (unsigned long long)r->fill_mixes);
		else
			printf("# metric: torn_reads %llu\n", (unsigned long long)r->torn_reads);
		printf("# metric: locked_writes %llu\n", (unsigned long long)r->stats->writes);
		printf("# metric: write_misses %llu\n", (unsigned long long)r->stats->write_misses);
	} else {
		printf("# metric: lookups %llu\n", (unsigned long long)r->stats->lookups);
		printf("# metric: lookup_misses %llu\n", (unsigned long long)r->stats->lookup_misses);
		printf("# metric: mismatches %llu\n", (unsigned long long)r->stats->mismatches);
	}
	if (opt->syscall_churn) {
		printf("# metric: churn_ops %llu\n", (unsigned long long)r->churn_ops);
		printf("# metric: churn_errors %llu\n", (unsigned long long)r->churn_errors);
	} else {
		printf("# metric: churn_ops %llu\n", (unsigned long long)r->stats->churn_inserts);
		printf("# metric: churn_errors %llu\n", (unsigned long long)r->stats->churn_errors);
	}
	if (failed) {
		printf("# metric: detect_seconds %.3f\n", r->det.seconds);
		printf("# FAIL: %s after %.3f s\n", r->det.what, r->det.seconds);
		printf("not ok %d %s\n", number, test_names[test]);
	} else if (atomic_load(&r->run_errors)) {
		printf("# error: a worker could not run (see above)\n");
		printf("not ok %d %s\n", number, test_names[test]);
	} else {
		printf("ok %d %s\n", number, test_names[test]);
	}
	fflush(stdout);

	joined = join_all(w, nworkers);
	if (!joined) {
		diag("worker threads are stuck in the kernel after %d s", JOIN_GRACE_S);
		return false;
	}
	teardown(&s);
	free(w);
	free(r);
	return true;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: htab_reuse [--duration=S] [--value-size=B] [--threads=N]\n"
		"                  [--test=lock_integrity|lookup_identity|same_key_reuse|all]\n"
		"                  [--keys=K] [--repeat=R] [--churn=bpf|syscall]\n"
		"                  [--churners=N] [--readers=N] [--writers=N]\n"
		"  --duration=S    seconds per subtest, or until the bug shows (default 10)\n"
		"  --value-size=B  map value size in bytes, 16..%d (default 4096)\n"
		"  --threads=N     threads per role (churn, reader, writer; default: online CPUs)\n"
		"  --churners=N, --readers=N, --writers=N   override --threads for one role\n"
		"  --test=NAME     run only this subtest (default: all)\n"
		"  --keys=K        keys of lock_integrity and same_key_reuse (default 1)\n"
		"  --repeat=R      BPF program runs per BPF_PROG_TEST_RUN call (default 8)\n"
		"  --churn=MODE    bpf: delete + insert in one BPF program run (default);\n"
		"                  syscall: with two bpf(2) calls from user space\n"
		"Prints KTAP; exits 0 when it was printed.\n",
		8 + 8 * HR_MAX_WORDS);
}

static int parse_args(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "duration", required_argument, NULL, 'd' },
		{ "value-size", required_argument, NULL, 'v' },
		{ "threads", required_argument, NULL, 't' },
		{ "churners", required_argument, NULL, 'C' },
		{ "readers", required_argument, NULL, 'R' },
		{ "writers", required_argument, NULL, 'W' },
		{ "keys", required_argument, NULL, 'k' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "churn", required_argument, NULL, 'c' },
		{ "test", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, i;
	char *end;

	memset(opt, 0, sizeof(*opt));
	opt->duration = 10;
	opt->value_size = 4096;
	opt->threads = sysconf(_SC_NPROCESSORS_ONLN);
	opt->churners = opt->readers = opt->writers = -1;
	opt->repeat = 8;
	for (i = 0; i < NR_TESTS; i++)
		opt->run[i] = true;
	while ((c = next_option(argc, argv, longopts, usage)) != -1) {
		long v = 0;

		if (c == '?')
			return -1;
		if (strchr("vtCRWkr", c) &&
		    parse_long(optarg, strchr("CRW", c) ? 0 : 1, 4096, &v)) {
			fprintf(stderr, "htab_reuse: bad value for an option: %s\n", optarg);
			return -1;
		}
		switch (c) {
		case 'd':
			opt->duration = strtod(optarg, &end);
			if (*end || end == optarg || !(opt->duration > 0)) {
				fprintf(stderr, "htab_reuse: bad --duration: %s\n", optarg);
				return -1;
			}
			break;
		case 'v':
			if (v < 16 || v > 8 + 8 * HR_MAX_WORDS) {
				fprintf(stderr, "htab_reuse: --value-size must be 16..%d\n",
					8 + 8 * HR_MAX_WORDS);
				return -1;
			}
			opt->value_size = v & ~7L; /* whole words */
			break;
		case 't':
			opt->threads = v;
			break;
		case 'C':
			opt->churners = v;
			break;
		case 'R':
			opt->readers = v;
			break;
		case 'W':
			opt->writers = v;
			break;
		case 'k':
			opt->keys = v;
			break;
		case 'r':
			opt->repeat = v;
			break;
		case 'c':
			if (strcmp(optarg, "bpf") && strcmp(optarg, "syscall")) {
				fprintf(stderr, "htab_reuse: --churn must be bpf or syscall\n");
				return -1;
			}
			opt->syscall_churn = !strcmp(optarg, "syscall");
			break;
		case 'T':
			for (i = 0; i < NR_TESTS; i++)
				opt->run[i] = !strcmp(optarg, "all") || !strcmp(optarg, test_names[i]);
			for (i = 0; i < NR_TESTS && !opt->run[i]; i++)
				;
			if (i == NR_TESTS) {
				fprintf(stderr, "htab_reuse: unknown --test: %s\n", optarg);
				return -1;
			}
			break;
		}
	}
	if (no_operands(argc, argv, "htab_reuse"))
		return -1;
	if (opt->threads < 1)
		opt->threads = 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct options opt;
	int i, n = 0, planned = 0;

	if (parse_args(argc, argv, &opt))
		return 2;
	ktap_start();
	for (i = 0; i < NR_TESTS; i++)
		planned += opt.run[i];
	printf("1..%d\n", planned);
	for (i = 0; i < NR_TESTS; i++) {
		if (!opt.run[i])
			continue;
		n++;
		if (!run_test(&opt, i, n)) {
			/* The kernel kept our threads: nothing else can run meaningfully. */
			for (i++; i < NR_TESTS; i++)
				if (opt.run[i])
					printf("not ok %d %s # SKIP the kernel is stuck\n", ++n,
					       test_names[i]);
			fflush(stdout);
			_exit(0);
		}
	}
	return 0;
}
