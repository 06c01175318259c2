/* BPF maps, one line each on why it exists. Sizes come from cflags (capture/loader.py).
 * Declared here, used only from guardian.bpf.c: BCC rewrites map calls (conns.lookup …)
 * in the main source file only, so every function that touches a map lives there. */
#ifndef GUARDIAN_MAPS_H
#define GUARDIAN_MAPS_H

#include "types.h"

/* Tracked sockets by (tgid, fd): only these fds are followed on read/write. */
BPF_TABLE("lru_hash", struct guardian_conn_key, struct guardian_conn, conns, MAX_CONNS);

/* Arguments of a data syscall between its enter and exit tracepoints, by thread. A thread's
 * entry stays and is rewritten in place at each syscall (`live` says whether a syscall is in
 * flight): a hash update and delete per syscall cost more than the rest of its work; LRU, so
 * the entries of threads that are gone make room. */
struct guardian_io {
    __u64 buf;      /* user buffer, iovec array or msghdr */
    __u64 addr;     /* sockaddr of sendto/recvfrom (UDP peers), 0 if none */
    __u32 fd;
    __u32 vlen;     /* iovec count for readv/writev */
    __u8 direction;
    __u8 shape;     /* IO_PLAIN, IO_IOVEC, IO_MSGHDR; IO_TLS_CHECK: a TLS write's ciphertext */
    __u8 live;      /* set at the enter, cleared by the exit that takes it */
    __u8 _pad[5];
    __u64 ts_ns;    /* at a write's entry: when its bytes can first reach the peer (reads: 0) */
};
enum { IO_PLAIN = 0, IO_IOVEC = 1, IO_MSGHDR = 2, IO_TLS_CHECK = 3 };
BPF_TABLE("lru_hash", __u64, struct guardian_io, active_io, MAX_INFLIGHT);

/* connect()/accept() arguments between enter and exit, by thread. */
struct guardian_sockcall {
    __u64 addr; /* user sockaddr (connect: the peer; accept: where the peer is written) */
    __u32 fd;
    __u32 _pad;
};
BPF_HASH(active_sockcall, __u64, struct guardian_sockcall, MAX_INFLIGHT);

/* Outgoing connections between SYN_SENT (in connect(), where we learn the socket's
 * address) and ESTABLISHED (maybe in softirq, where the local port is finally known). */
BPF_TABLE("lru_hash", __u64, struct guardian_conn_key, connecting, MAX_INFLIGHT);

/* 4-tuple of an outgoing connection that became ESTABLISHED before connect() returned
 * (always so on loopback): connect()'s exit picks it up. */
BPF_TABLE("lru_hash", struct guardian_conn_key, struct guardian_tuple, connect_tuple, MAX_INFLIGHT);

/* 4-tuple of passively opened connections (SYN_RECV -> ESTABLISHED, in softirq: no
 * process context), by remote address: accept() finds its local address here. */
struct guardian_remote {
    __u8 raddr[16];
    __u16 rport;
    __u16 _pad[3];
};
BPF_TABLE("lru_hash", struct guardian_remote, struct guardian_tuple, accept_tuple, MAX_INFLIGHT);

/* Event under construction: too big for the 512-byte BPF stack. */
struct guardian_record {
    struct guardian_event ev;
    /* three times the bound: offsets are masked with (MAX_PAYLOAD - 1) and lengths with
     * (2 * MAX_PAYLOAD - 1) so the verifier can prove every copy fits (MAX_PAYLOAD is a
     * power of two); at most MAX_PAYLOAD bytes are ever sent */
    __u8 payload[3 * MAX_PAYLOAD];
};
BPF_PERCPU_ARRAY(scratch, struct guardian_record, 1);

/* A gathered I/O (readv/writev/sendmsg/recvmsg) being walked one record per tail call
 * (guardian_iov_send/recv): where the next record starts. Per CPU: a tail call stays on it. */
struct guardian_iov_state {
    struct guardian_conn_key key;
    __u64 iov;     /* user iovec array */
    __u64 peer;    /* msg_name (unconnected UDP), for the first record */
    __u32 vlen;    /* iovecs in the array */
    __u32 idx;     /* next iovec to walk */
    __u32 ioff;    /* bytes of iovec idx already in a record (read buffers are split) */
    __u32 left;    /* bytes of the syscall not yet in a record */
    __u32 copied;  /* this record: bytes copied */
    __u32 covered; /* this record: stream bytes it stands for */
    __u8 records;  /* records sent so far */
    __u8 broken;   /* the iovec array could not be read */
    __u8 plain;    /* no array: one buffer at `iov`, `left` bytes (a plain read/write) */
    __u8 dir;      /* plain: the buffer's direction (walked by the read-side program) */
    __u8 _pad[4];
    __u64 ts_ns;   /* the records' timestamp (send_record), 0: when each is sent */
};
BPF_PERCPU_ARRAY(iov_walk, struct guardian_iov_state, 1);

/* By direction: guardian_iov_send, guardian_iov_recv; capture/loader.py fills it. */
BPF_PROG_ARRAY(iov_tail, 2);
/* [0] guardian_tls_flush: a TLS write's plaintext, at the first send of its socket (TLS section) */
BPF_PROG_ARRAY(tls_tail, 1);

/* [0] != 0 once userspace is ready for data (capture/loader.py Loader.arm): BCC attaches the
 * tracepoints one after the other, seconds apart on a busy host, and data followed before the
 * last one is attached would show one direction of a stream only (a server's requests without
 * their answers, positions without a gap). Until then connections are only opened and closed. */
BPF_ARRAY(armed, __u32, 1);

/* Counters (enum guardian_stat), summed over CPUs by the agent. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_MAX);

/* Events to userspace. Size in pages (a power of two). Declared by hand rather than with
 * BPF_RINGBUF_OUTPUT for one more method: BCC (0.26) has no ringbuf_query, and rewrites
 * `events.perf_read(flags)` into bpf_perf_event_read(<the map>, flags), which the macro below
 * turns into bpf_ringbuf_query(<the map>, flags) when the rewritten source is compiled. */
#define bpf_perf_event_read(map, flags) bpf_ringbuf_query(map, flags)
struct events_table_t {
    int key;
    u32 leaf;
    int (*ringbuf_output)(void *, u64, u64);
    u64 (*perf_read)(u64); /* bpf_ringbuf_query: BPF_RB_AVAIL_DATA, ... */
    u32 max_entries;
};
__attribute__((section("maps/ringbuf"))) struct events_table_t events = {.max_entries = RINGBUF_PAGES * PAGE_SIZE};

/* Records `events` refused (ringbuf_send): the agent merges them back in time order. */
BPF_RINGBUF_OUTPUT(spill, SPILL_PAGES);

#endif
