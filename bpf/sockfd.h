/* The socket behind a file descriptor of the calling process, read from the kernel's objects
 * (pure: no maps, so it may live outside guardian.bpf.c). */
#ifndef GUARDIAN_SOCKFD_H
#define GUARDIAN_SOCKFD_H

#include "types.h"
#include "sockaddr.h"

/* The calling process's socket `fd`, read from the kernel's own objects at event time:
 * task -> files -> fd table -> file -> socket -> sock. Its inode is the socket's identity
 * (what /proc/<pid>/fd shows); its addresses are those the socket has now: both ends once
 * connected, only the local one for an unconnected UDP socket (its peers come per datagram).
 * Userspace cannot do this later: by then a short-lived client has exited or its fd number
 * names its next socket, and /proc/net only shows the agent's own network namespace.
 * Field offsets come from the running kernel's BTF (capture/btf.py via cflags), never from
 * the compile-time headers, which may be another kernel's.
 * Returns SOCK_LOCAL | SOCK_REMOTE for the halves of `t` it filled (*ino set), SOCK_NOT_IP
 * for a socket of another family (unix, netlink), 0 when it could not tell.
 * *type: SOCK_STREAM (1) or SOCK_DGRAM (2). */
#define SOCK_LOCAL 1
#define SOCK_REMOTE 2
#define SOCK_NOT_IP 4
#ifdef OFF_TASK_FILES
static __always_inline int sock_from_fd(__u32 fd, struct guardian_tuple *t, __u32 *ino, __u16 *type)
{
    __u64 task = bpf_get_current_task();
    __u64 files = 0, fdt = 0, fds = 0, file = 0, inode = 0, sock = 0, sk = 0;
    __u32 max_fds = 0;
    __u16 mode = 0, family = 0, lport = 0, dport_be = 0;
    int got = 0;
    *ino = 0;
    if (bpf_probe_read_kernel(&files, 8, (void *)(task + OFF_TASK_FILES)) || !files)
        return 0;
    if (bpf_probe_read_kernel(&fdt, 8, (void *)(files + OFF_FILES_FDT)) || !fdt)
        return 0;
    if (bpf_probe_read_kernel(&max_fds, 4, (void *)(fdt + OFF_FDT_MAX_FDS)) || fd >= max_fds)
        return 0;
    if (bpf_probe_read_kernel(&fds, 8, (void *)(fdt + OFF_FDT_FD)) || !fds)
        return 0;
    if (bpf_probe_read_kernel(&file, 8, (void *)(fds + (__u64)fd * 8)) || !file)
        return 0;
    if (bpf_probe_read_kernel(&inode, 8, (void *)(file + OFF_FILE_INODE)) || !inode)
        return 0;
    if (bpf_probe_read_kernel(&mode, 2, (void *)(inode + OFF_INODE_MODE)) || (mode & 0170000) != 0140000)
        return 0; /* not S_IFSOCK */
    if (bpf_probe_read_kernel(&sock, 8, (void *)(file + OFF_FILE_PRIVATE)) || !sock)
        return 0;
    if (bpf_probe_read_kernel(&sk, 8, (void *)(sock + OFF_SOCKET_SK)) || !sk)
        return 0;
    bpf_probe_read_kernel(type, 2, (void *)(sock + OFF_SOCKET_TYPE));
    bpf_probe_read_kernel(&family, 2, (void *)(sk + OFF_SK_FAMILY));
    if (family == GUARDIAN_AF_INET) {
        __builtin_memset(t->laddr, 0, 10);
        __builtin_memset(t->raddr, 0, 10);
        t->laddr[10] = t->laddr[11] = t->raddr[10] = t->raddr[11] = 0xff;
        bpf_probe_read_kernel(t->laddr + 12, 4, (void *)(sk + OFF_SK_RCV_SADDR));
        bpf_probe_read_kernel(t->raddr + 12, 4, (void *)(sk + OFF_SK_DADDR));
    } else if (family == GUARDIAN_AF_INET6) {
        bpf_probe_read_kernel(t->laddr, 16, (void *)(sk + OFF_SK_V6_RCV_SADDR));
        bpf_probe_read_kernel(t->raddr, 16, (void *)(sk + OFF_SK_V6_DADDR));
    } else if (family) {
        return SOCK_NOT_IP;
    } else {
        return 0;
    }
    /* socket inodes are numbered by get_next_ino(): 32 bits */
    bpf_probe_read_kernel(ino, 4, (void *)(inode + OFF_INODE_INO));
    bpf_probe_read_kernel(&lport, 2, (void *)(sk + OFF_SK_NUM));
    bpf_probe_read_kernel(&dport_be, 2, (void *)(sk + OFF_SK_DPORT));
    t->family = family;
    if (lport) {
        t->lport = lport;
        got |= SOCK_LOCAL;
    }
    if (dport_be) { /* connected */
        t->rport = (dport_be >> 8) | (dport_be << 8);
        got |= SOCK_REMOTE;
    }
    return got;
}
#endif

#endif
