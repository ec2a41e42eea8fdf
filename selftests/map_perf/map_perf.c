// SPDX-License-Identifier: GPL-2.0
/*
 * map_perf: throughput of a BPF_F_NO_PREALLOC hash map's update + delete, the
 * "hash-kmalloc" case of the kernel's samples/bpf/map_perf_test (this is an
 * independent implementation with the same shape).
 *
 * A kprobe on __x64_sys_getpgid runs map_perf_hash_kmalloc, which updates and
 * deletes the calling process' key.  One process per CPU, pinned with
 * sched_setaffinity(), calls getpgid() --loops times; each measures its own
 * events per second.  Every round (--maps) loads the object again, so each
 * round measures a fresh map; the KTAP has one subtest per round:
 *
 *   # metric: events_per_sec_cpu0 ...   (that CPU's process)
 *   # metric: events_per_sec ...        (sum over the CPUs)
 *   ok 1 map_1
 *   ...
 *   # metric: events_per_sec ...        (program level: mean over rounds of the sums;
 *                                        also _cpuK means and _min/_max round sums)
 *
 * A round fails when the program never ran on a CPU or an update failed.
 *
 * Options: --cpus=N (default: all online), --entries=E (max_entries, default
 * 8192), --loops=L (getpgid calls per process, default 1000000 as in
 * map_perf_test), --value-size=B (default 8), --maps=M (rounds, default 1),
 * --test-mask=X (map_perf_test's test flags; only bit 2, 0x4 = hash-kmalloc,
 * is implemented, other bits are ignored with a diagnostic; default 0x4).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "../lib/common.h"
#include "map_perf.h"

#define OBJ_NAME "map_perf.bpf.o"
#define PROG_NAME "map_perf_hash_kmalloc"
#define KPROBE_FUNC "__x64_sys_getpgid"
#define HASH_KMALLOC_BIT 0x4 /* map_perf_test's HASH_KMALLOC = 1 << 2 */
#define MAX_VALUE_SIZE 65536

struct options {
	int cpus;
	unsigned int entries;
	long loops;
	unsigned int value_size;
	int maps;
	unsigned long test_mask;
};

/* What a benchmark process reports to the parent. */
struct sample {
	int cpu;
	int ok;
	double seconds;
};

static int write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

/* A benchmark process: pinned to cpu, registered, then getpgid() in a loop. */
static void bench_child(int cpu, long loops, int tgids_fd, int ready_fd, int go_fd, int result_fd)
{
	struct sample s = { .cpu = cpu };
	__u32 key = cpu, tgid = getpid();
	double t0;
	char c;
	long i;

	if (pin_to_cpu(cpu) == 0 &&
	    bpf_map_update_elem(tgids_fd, &key, &tgid, BPF_ANY) == 0)
		s.ok = 1;
	c = s.ok;
	write_full(ready_fd, &c, 1);
	/* The parent closes go_fd's other end to start everyone at once. */
	while (read(go_fd, &c, 1) < 0 && errno == EINTR)
		;
	if (s.ok) {
		t0 = now();
		for (i = 0; i < loops; i++)
			syscall(SYS_getpgid, 0);
		s.seconds = now() - t0;
	}
	write_full(result_fd, &s, sizeof(s));
	_exit(0);
}

struct round_result {
	bool ok;
	char why[512];
	double eps[MP_MAX_CPUS];
	double total;
	struct mp_count count[MP_MAX_CPUS];
};

/* One round: a freshly loaded object (so a fresh map), all CPUs at once. */
static void run_round(const struct options *opt, const char *path, struct round_result *res)
{
	int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, result[2] = { -1, -1 };
	struct bpf_object *obj = NULL;
	struct bpf_link *link = NULL;
	struct bpf_program *prog;
	struct bpf_map *hmap, *src, *tgids, *counts;
	pid_t pids[MP_MAX_CPUS];
	int started = 0, i, err;

	memset(res, 0, sizeof(*res));
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		snprintf(res->why, sizeof(res->why), "opening %.300s: %s", path, strerror(errno));
		return;
	}
	hmap = bpf_object__find_map_by_name(obj, "hmap");
	src = bpf_object__find_map_by_name(obj, "src");
	tgids = bpf_object__find_map_by_name(obj, "tgids");
	counts = bpf_object__find_map_by_name(obj, "counts");
	prog = bpf_object__find_program_by_name(obj, PROG_NAME);
	if (!hmap || !src || !tgids || !counts || !prog) {
		snprintf(res->why, sizeof(res->why), "%.300s lacks a map or the program", path);
		goto out;
	}
	if (bpf_map__set_max_entries(hmap, opt->entries) ||
	    bpf_map__set_value_size(hmap, opt->value_size) ||
	    bpf_map__set_value_size(src, opt->value_size)) {
		snprintf(res->why, sizeof(res->why), "setting the map sizes failed");
		goto out;
	}
	err = bpf_object__load(obj);
	if (err) {
		snprintf(res->why, sizeof(res->why), "loading %.300s: %s (verifier log on stderr)", path,
			 strerror(-err));
		goto out;
	}
	link = bpf_program__attach_kprobe(prog, false, KPROBE_FUNC);
	if (!link) {
		snprintf(res->why, sizeof(res->why), "error attaching a kprobe to %s: %s",
			 KPROBE_FUNC, strerror(errno));
		goto out;
	}
	if (pipe(ready) || pipe(go) || pipe(result)) {
		snprintf(res->why, sizeof(res->why), "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(stdout);
	for (i = 0; i < opt->cpus; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			snprintf(res->why, sizeof(res->why), "fork: %s", strerror(errno));
			break;
		}
		if (pid == 0) {
			close(go[1]);
			bench_child(i, opt->loops, bpf_map__fd(tgids), ready[1], go[0], result[1]);
		}
		pids[started++] = pid;
	}
	/* Only the children write these: EOF if they all die. */
	close(go[0]);
	close(ready[1]);
	close(result[1]);
	go[0] = ready[1] = result[1] = -1;
	for (i = 0; i < started; i++) {
		char c;

		if (read_full(ready[0], &c, 1) || !c) {
			snprintf(res->why, sizeof(res->why),
				 "a benchmark process could not pin itself or register");
			break;
		}
	}
	close(go[1]); /* go */
	go[1] = -1;
	if (!res->why[0]) {
		for (i = 0; i < started; i++) {
			struct sample s;

			if (read_full(result[0], &s, sizeof(s)) || !s.ok || s.seconds <= 0) {
				snprintf(res->why, sizeof(res->why), "a benchmark process did not report");
				break;
			}
			res->eps[s.cpu] = opt->loops / s.seconds;
		}
	}
	for (i = 0; i < started; i++) {
		if (res->why[0])
			kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	if (res->why[0])
		goto out;

	res->ok = true;
	for (i = 0; i < opt->cpus; i++) {
		__u32 key = i;

		res->total += res->eps[i];
		if (bpf_map_lookup_elem(bpf_map__fd(counts), &key, &res->count[i]))
			memset(&res->count[i], 0, sizeof(res->count[i]));
		if (res->count[i].events == 0) {
			res->ok = false;
			snprintf(res->why, sizeof(res->why),
				 "error: the kprobe program never ran on cpu%d", i);
		} else if (res->count[i].update_errors) {
			res->ok = false;
			snprintf(res->why, sizeof(res->why), "error: %llu updates failed on cpu%d",
				 (unsigned long long)res->count[i].update_errors, i);
		}
	}
out:
	for (i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (go[i] >= 0)
			close(go[i]);
		if (result[i] >= 0)
			close(result[i]);
	}
	bpf_link__destroy(link);
	bpf_object__close(obj);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: map_perf [--cpus=N] [--entries=E] [--loops=L] [--value-size=B] [--maps=M]\n"
		"                [--test-mask=X]\n"
		"  --cpus=N        benchmark processes, one pinned per CPU 0..N-1 (default: all online)\n"
		"  --entries=E     max_entries of the hash map (default 8192)\n"
		"  --loops=L       getpgid() calls per process (default 1000000)\n"
		"  --value-size=B  map value size in bytes (default 8)\n"
		"  --maps=M        rounds, each with a freshly created map (default 1)\n"
		"  --test-mask=X   map_perf_test's flags; only 0x4 (hash-kmalloc) is implemented\n"
		"Prints KTAP: one subtest map_N per round, events per second as metrics.\n");
}

static int parse_args(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "cpus", required_argument, NULL, 'c' },
		{ "entries", required_argument, NULL, 'e' },
		{ "loops", required_argument, NULL, 'l' },
		{ "value-size", required_argument, NULL, 'v' },
		{ "maps", required_argument, NULL, 'm' },
		{ "test-mask", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	int c;

	opt->cpus = online < MP_MAX_CPUS ? online : MP_MAX_CPUS;
	opt->entries = 8192;
	opt->loops = 1000000;
	opt->value_size = 8;
	opt->maps = 1;
	opt->test_mask = HASH_KMALLOC_BIT;
	while ((c = next_option(argc, argv, longopts, usage)) != -1) {
		unsigned long long v = 0;

		if (c == '?')
			return -1;
		/* --test-mask: any bits; the others: 1..INT_MAX */
		if (parse_ull(optarg, c == 't' ? 0 : 1, c == 't' ? ULLONG_MAX : INT_MAX, &v)) {
			fprintf(stderr, "map_perf: bad value: %s\n", optarg);
			return -1;
		}
		switch (c) {
		case 'c':
			if (v > (unsigned long long)online || v > MP_MAX_CPUS) {
				fprintf(stderr, "map_perf: --cpus=%llu but %ld CPUs are online (max %d)\n",
					v, online, MP_MAX_CPUS);
				return -1;
			}
			opt->cpus = v;
			break;
		case 'e':
			opt->entries = v;
			break;
		case 'l':
			opt->loops = v;
			break;
		case 'v':
			if (v > MAX_VALUE_SIZE) {
				fprintf(stderr, "map_perf: --value-size must be 1..%d\n", MAX_VALUE_SIZE);
				return -1;
			}
			opt->value_size = v;
			break;
		case 'm':
			opt->maps = v;
			break;
		case 't':
			opt->test_mask = v;
			break;
		}
	}
	return no_operands(argc, argv, "map_perf");
}

int main(int argc, char **argv)
{
	struct options opt;
	struct round_result *res;
	double sum_total = 0, sum_cpu[MP_MAX_CPUS] = { 0 }, min = 0, max = 0;
	char path[PATH_MAX];
	int m, i, good = 0, err;

	if (parse_args(argc, argv, &opt))
		return 2;
	ktap_start();
	if (!(opt.test_mask & HASH_KMALLOC_BIT)) {
		printf("1..0 # SKIP only hash-kmalloc (test mask 0x4) is implemented\n");
		return 0;
	}
	printf("1..%d\n", opt.maps);
	if (opt.test_mask & ~(unsigned long)HASH_KMALLOC_BIT)
		diag("test mask 0x%lx: only 0x4 (hash-kmalloc) is implemented, the rest is ignored",
		     opt.test_mask);
	diag("hash-kmalloc: %d cpus, %ld loops per cpu, max_entries %u, value_size %u, %d maps",
	     opt.cpus, opt.loops, opt.entries, opt.value_size, opt.maps);
	err = path_beside_exe(path, sizeof(path), OBJ_NAME);
	res = malloc(sizeof(*res));
	if (err || !res) {
		printf("Bail out! cannot locate %s\n", OBJ_NAME);
		return 0;
	}
	for (m = 1; m <= opt.maps; m++) {
		run_round(&opt, path, res);
		if (!res->ok) {
			diag("%s", res->why);
			printf("not ok %d map_%d\n", m, m);
			continue;
		}
		for (i = 0; i < opt.cpus; i++) {
			if (res->count[i].events != (unsigned long long)opt.loops)
				diag("cpu%d: the kprobe program counted %llu events for %ld calls", i,
				     (unsigned long long)res->count[i].events, opt.loops);
			if (res->count[i].delete_errors)
				diag("cpu%d: %llu deletes did not find their key", i,
				     (unsigned long long)res->count[i].delete_errors);
		}
		for (i = 0; i < opt.cpus; i++) {
			printf("# metric: events_per_sec_cpu%d %.0f\n", i, res->eps[i]);
			sum_cpu[i] += res->eps[i];
		}
		printf("# metric: events_per_sec %.0f\n", res->total);
		printf("ok %d map_%d\n", m, m);
		sum_total += res->total;
		min = good == 0 || res->total < min ? res->total : min;
		max = good == 0 || res->total > max ? res->total : max;
		good++;
	}
	if (good) {
		/* Program level: per CPU and summed over CPUs, mean over the rounds. */
		for (i = 0; i < opt.cpus; i++)
			printf("# metric: events_per_sec_cpu%d %.0f\n", i, sum_cpu[i] / good);
		printf("# metric: events_per_sec_min %.0f\n", min);
		printf("# metric: events_per_sec_max %.0f\n", max);
		printf("# metric: events_per_sec %.0f\n", sum_total / good);
	}
	free(res);
	return 0;
}
