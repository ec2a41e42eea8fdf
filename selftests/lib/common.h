/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the user-space programs of selftests/ (htab_reuse,
 * map_perf): option parsing, KTAP output, time, CPU pinning and where the
 * BPF object lies.  libc only, no state, no constructors: the Makefile
 * compiles lib/common.c into each (static) program.
 */
#ifndef SELFTESTS_COMMON_H
#define SELFTESTS_COMMON_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

/* Seconds on CLOCK_MONOTONIC. */
double now(void);

/* Pins the calling thread (the process, if it has one) to cpu: 0 or -errno. */
int pin_to_cpu(int cpu);

/*
 * path = the directory of the running program (/proc/self/exe) + "/" + name:
 * where a program finds its BPF object.  0, or -errno (-ENAMETOOLONG when it
 * does not fit in size bytes).
 */
int path_beside_exe(char *path, size_t size, const char *name);

/*
 * Starts the KTAP output: stdout becomes line buffered (each line reaches the
 * console as it is printed and none is left in the buffer across a fork),
 * then the version line.  The caller prints the plan.
 */
void ktap_start(void);

/* A KTAP diagnostic line: "# " + the message + "\n", flushed at once. */
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * getopt_long() with "h" as the only short option, for the option loops:
 * -h or --help prints usage(stdout) and exits 0; an unknown option or a
 * missing argument (getopt_long() has said which) prints usage(stderr) and
 * returns '?'.  Otherwise the option's val, or -1 after the last option.
 */
int next_option(int argc, char **argv, const struct option *longopts,
		void (*usage)(FILE *f));

/* 0 when no argument is left after the options, else says so as prog: -1. */
int no_operands(int argc, char **argv, const char *prog);

/*
 * All of s as a number in any base strtol() / strtoull() take (10, 0x..,
 * 0..), within min..max: 0 and *v set, else -1.  parse_ull() takes what
 * strtoull() takes, a minus sign too ("-1" is the largest value).
 */
int parse_long(const char *s, long min, long max, long *v);
int parse_ull(const char *s, unsigned long long min, unsigned long long max,
	      unsigned long long *v);

#endif
