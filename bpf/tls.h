/* Pure helpers for the TLS uprobes (no maps: those live in guardian.bpf.c's TLS section;
 * the TLS structs and counters are in types.h, the ABI the tests check).
 * Go layouts are those of the Go 1.17+ amd64 register ABI and of net/poll structs that
 * have not changed since Go 1.12; a wrong guess is caught by the conns lookup (no such fd). */
#ifndef GUARDIAN_TLS_H
#define GUARDIAN_TLS_H

#include "types.h"

/* crypto/tls.Conn starts with `conn net.Conn` (itab, data); data is a *net.TCPConn whose
 * first word is *netFD; netFD starts with poll.FD {fdMutex (16 bytes), Sysfd int}. */
#define GO_TLS_CONN_IFACE_DATA 8
#define GO_NETFD_SYSFD 16

/* Go register ABI (amd64): args in RAX, RBX, RCX, RDI…; results in RAX…; g in R14. */
#define GO_ARG1(ctx) ((ctx)->ax)
#define GO_ARG2(ctx) ((ctx)->bx)
#define GO_ARG3(ctx) ((ctx)->cx)
#define GO_RET1(ctx) ((ctx)->ax)
#define GO_G(ctx) ((ctx)->r14)

static __always_inline int go_conn_fd(__u64 tls_conn, __u32 *fd)
{
    __u64 tcp = 0, netfd = 0;
    __s64 sysfd = -1;
    if (bpf_probe_read_user(&tcp, sizeof(tcp), (void *)(tls_conn + GO_TLS_CONN_IFACE_DATA)) || !tcp)
        return -1;
    if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)tcp) || !netfd)
        return -1;
    if (bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(netfd + GO_NETFD_SYSFD)) || sysfd < 0)
        return -1;
    *fd = (__u32)sysfd;
    return 0;
}

#endif
