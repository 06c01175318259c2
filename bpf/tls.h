/* Pure helpers for the TLS uprobes (no maps: those live in guardian.bpf.c's TLS section).
 * Go layouts are those of the Go 1.17+ amd64 register ABI and of net/poll structs that
 * have not changed since Go 1.12; a wrong guess is caught by the conns lookup (no such fd). */
#ifndef GUARDIAN_TLS_H
#define GUARDIAN_TLS_H

#include "types.h"

/* Counters of the TLS section (tls_stats array), reported as kernel.tls_* by the agent. */
enum guardian_tls_stat {
    TLS_STAT_PLAINTEXT = 0, /* plaintext chunks handed to emit_data */
    TLS_STAT_NO_FD = 1,     /* plaintext dropped: SSL object not yet tied to a socket */
    TLS_STAT_BOUND = 2,     /* SSL objects tied to a socket */
    TLS_STAT_READ_FAULT = 3, /* Go net.Conn -> fd chain not readable */
    TLS_STAT_MAX = 4,
};

/* What an SSL_read/SSL_write call is doing, between its entry and return probes. */
struct tls_call {
    __u64 ssl;
    __u64 buf;
    __u64 out_len; /* size_t * of the _ex variants (bytes done), 0 for SSL_read/SSL_write */
    __u8 dir;
    __u8 source;
    __u8 _pad[6];
};

/* A process that just exec'd (tls_execs ring): userspace probes its new image. The time
 * lets userspace report how long after the exec its probes were in place. */
struct tls_exec {
    __u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u32 pid;
    __u32 _pad;
};

/* SSL objects are per process: the same pointer in two processes is two objects. */
struct tls_ssl_key {
    __u32 tgid;
    __u32 _pad;
    __u64 ssl;
};

/* A Go (*Conn).Read in flight, by goroutine (R14): goroutines move between threads. */
struct tls_go_key {
    __u32 tgid;
    __u32 _pad;
    __u64 goid;
};

struct tls_go_read {
    __u64 buf;
    __u32 fd;
    __u32 _pad;
};

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
