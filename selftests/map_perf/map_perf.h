/* SPDX-License-Identifier: GPL-2.0 */
/* Shared between map_perf.bpf.c and map_perf.c. */
#ifndef MAP_PERF_H
#define MAP_PERF_H

#define MP_MAX_CPUS 64

/* Per benchmark CPU, written only by the program running on that CPU. */
struct mp_count {
	__u64 events;        /* update + delete pairs done */
	__u64 update_errors; /* bpf_map_update_elem() < 0, e.g. -ENOMEM */
	__u64 delete_errors;
};

#endif
