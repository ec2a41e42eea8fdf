// SPDX-License-Identifier: GPL-2.0
/* Helpers shared by the user-space programs of selftests/: see common.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* pid 0: the calling thread, as pthread_setaffinity_np(pthread_self()) */
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

int path_beside_exe(char *path, size_t size, const char *name)
{
	ssize_t n = readlink("/proc/self/exe", path, size - 1);
	char *slash;

	if (n < 0)
		return -errno;
	path[n] = '\0';
	slash = strrchr(path, '/');
	if (!slash || (size_t)(slash - path) + 1 + strlen(name) + 1 > size)
		return -ENAMETOOLONG;
	strcpy(slash + 1, name);
	return 0;
}

void ktap_start(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("KTAP version 1\n");
}

void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

int next_option(int argc, char **argv, const struct option *longopts,
		void (*usage)(FILE *f))
{
	int c = getopt_long(argc, argv, "h", longopts, NULL);

	if (c == 'h') {
		usage(stdout);
		exit(0);
	}
	if (c == '?')
		usage(stderr);
	return c;
}

int no_operands(int argc, char **argv, const char *prog)
{
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument: %s\n", prog, argv[optind]);
		return -1;
	}
	return 0;
}

int parse_long(const char *s, long min, long max, long *v)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(s, &end, 0);
	if (errno || *end || end == s || n < min || n > max)
		return -1;
	*v = n;
	return 0;
}

int parse_ull(const char *s, unsigned long long min, unsigned long long max,
	      unsigned long long *v)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(s, &end, 0);
	if (errno || *end || end == s || n < min || n > max)
		return -1;
	*v = n;
	return 0;
}
