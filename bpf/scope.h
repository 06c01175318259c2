/* capture.scope in the kernel: an agent scoped to a cgroup v2 subtree or to a network namespace
 * follows only the processes inside it, so the records (and TLS probe work) of every other process
 * end at the first check of the programs that emit, before any copy, counted as
 * kernel.scope_skipped. capture/scope.py keeps the checks the kernel cannot make (a process gone
 * before its spans, a scope the kernel could not be given).
 * Compiled in with SCOPE_CGROUP=1 and/or SCOPE_NETNS=1 (the latter only with the running kernel's
 * offsets from BTF, capture/btf.py); the map is filled by capture/loader.py before any probe
 * attaches. The map is read and the skips counted in guardian.bpf.c (BCC rewrites map calls in
 * the main file only). */
#ifndef GUARDIAN_SCOPE_H
#define GUARDIAN_SCOPE_H

#include "types.h"

struct guardian_scope {
    __u64 cgroup_id; /* the subtree's top cgroup (its directory's inode in the v2 hierarchy) */
    __u32 level;     /* its depth: the root is 0, /a is 1 */
    __u32 netns;     /* the namespace's inode (stat of /proc/PID/ns/net): task->nsproxy->net_ns->ns.inum */
};

#if SCOPE_NETNS && !defined(OFF_TASK_NSPROXY)
#error "SCOPE_NETNS needs the task/nsproxy/net offsets from BTF (capture/btf.py)"
#endif

#if SCOPE_CGROUP || SCOPE_NETNS
#define SCOPED 1
/* Slot 0: the scope. A map rather than cflags so the compiled image does not depend on it. */
BPF_ARRAY(scope_map, struct guardian_scope, 1);

/* Whether the current task is in scope `s` (slot 0 of scope_map): its cgroup's ancestor at the
 * scope's depth is the scope's cgroup, and its network namespace is the scope's (the task's, not a
 * socket's: a process in the namespace is what the agent answers for, the way /proc/PID/ns/net
 * judges it). A task without namespaces (exiting) is out. */
static __always_inline int scope_allows(const struct guardian_scope *s)
{
#if SCOPE_CGROUP
    if (bpf_get_current_ancestor_cgroup_id(s->level) != s->cgroup_id)
        return 0;
#endif
#if SCOPE_NETNS
    __u64 task = bpf_get_current_task();
    __u64 nsproxy = 0, net = 0;
    __u32 inum = 0;
    if (bpf_probe_read_kernel(&nsproxy, 8, (void *)(task + OFF_TASK_NSPROXY)) || !nsproxy)
        return 0;
    if (bpf_probe_read_kernel(&net, 8, (void *)(nsproxy + OFF_NSPROXY_NET)) || !net)
        return 0;
    if (bpf_probe_read_kernel(&inum, 4, (void *)(net + OFF_NET_INUM)) || inum != s->netns)
        return 0;
#endif
    return 1;
}
#endif

#endif
