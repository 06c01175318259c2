/* capture.scope in the kernel: an agent scoped to a cgroup v2 subtree follows only the processes
 * inside it, so the records of every other process never reach the ring buffer (capture/scope.py
 * keeps the checks the kernel cannot make: a network namespace, a process gone before its spans).
 * Compiled in with SCOPE_CGROUP=1; the map is filled by capture/loader.py before any probe attaches. */
#ifndef GUARDIAN_SCOPE_H
#define GUARDIAN_SCOPE_H

#include "types.h"

struct guardian_scope {
    __u64 cgroup_id; /* the subtree's top cgroup (its directory's inode in the v2 hierarchy) */
    __u32 level;     /* its depth: the root is 0, /a is 1 */
    __u32 _pad;
};

#if SCOPE_CGROUP
/* Slot 0: the scope. A map rather than cflags so the compiled image does not depend on it. */
BPF_ARRAY(scope_cgroup, struct guardian_scope, 1);
#endif

#endif
