/* Guardian's kernel/userspace ABI: the single source of event layouts, protocol ids and
 * counters. capture/abi.py mirrors the structs with ctypes and reads the enums from this
 * file; tests/capture/test_abi.py compiles this header with gcc and checks sizes, offsets
 * and enum values. Rules: fixed-width types only, no implicit padding (explicit _pad). */
#ifndef GUARDIAN_TYPES_H
#define GUARDIAN_TYPES_H

#include <linux/types.h>

/* REGISTRY:protocols — L7 protocol ids; userspace parsers are named after them
 * (PROTO_HTTP1 -> capture/protocols/http1.py). Append only: ids are on the wire. */
enum guardian_proto {
    PROTO_UNKNOWN = 0,
    PROTO_HTTP1 = 1,
    PROTO_HTTP2 = 2,
    PROTO_POSTGRES = 3,
    PROTO_MYSQL = 4,
    PROTO_REDIS = 5,
    PROTO_MONGODB = 6,
    PROTO_KAFKA = 7,
    PROTO_CASSANDRA = 8,
    PROTO_AMQP = 9,
    PROTO_DNS = 10,
    PROTO_MEMCACHED = 11,
    PROTO_NATS = 12,
    PROTO_TLS_HANDSHAKE = 13, /* hellos + records of a TLS handshake, until plaintext flows */
    PROTO_MAX = 14,
};

/* Which way the bytes went, seen from the traced process. */
enum guardian_direction {
    DIR_EGRESS = 0,  /* written/sent by the process */
    DIR_INGRESS = 1, /* read/received by the process */
};

/* Who opened the connection: decides CLIENT vs SERVER spans. */
enum guardian_role {
    ROLE_UNKNOWN = 0,
    ROLE_CLIENT = 1, /* connect() or first message sent was a request */
    ROLE_SERVER = 2, /* accept() or first message received was a request */
};

/* What a detector saw in the first bytes of a message. */
enum guardian_msg_type {
    MSG_NONE = 0, /* not this protocol */
    MSG_REQUEST = 1,
    MSG_RESPONSE = 2,
};

enum guardian_event_kind {
    EV_DATA = 1,  /* payload bytes of a connection with a known protocol */
    EV_CLOSE = 2, /* the process closed the fd: flush the parser */
    EV_PAIR = 3,  /* an exchange (bpf: pair_proto): a response chunk's EV_DATA record, then its request's
                   * whole EV_DATA record (header + copied bytes) after the copied bytes */
};

/* Where the bytes were observed. Syscall bytes of a TLS connection are ciphertext and
 * dropped; the TLS uprobes report the plaintext with their own source. */
enum guardian_source {
    SRC_SYSCALL = 0,
    SRC_OPENSSL = 1,
    SRC_BORINGSSL = 2,
    SRC_GOTLS = 3,
    SRC_NODE = 4,
};

enum guardian_transport {
    TRANSPORT_TCP = 0,
    TRANSPORT_UDP = 1,
};

/* conn_info.flags */
enum guardian_conn_flags {
    CONN_IGNORED = 1,     /* gave up detecting: no known protocol in the first messages */
    CONN_ENCRYPTED = 2,   /* TLS records seen on the socket: syscall bytes are ciphertext */
    CONN_TUPLE_KNOWN = 4, /* the kernel filled the 4-tuple (else userspace resolves what is missing) */
    CONN_SEEDED = 8,      /* created by userspace for a connection older than the agent */
    CONN_TLS_PLAINTEXT = 16, /* the TLS probes deliver its plaintext: its syscalls carry nothing to copy */
};

/* Counters in the `stats` per-CPU array; the agent reports them, none is silent. */
enum guardian_stat {
    STAT_EVENTS = 0,          /* events written to the ring buffer */
    STAT_RINGBUF_DROPS = 1,   /* events lost: both ring buffers refused them */
    STAT_TRUNCATED = 2,       /* messages longer than the payload bound (prefix sent) */
    STAT_UNKNOWN_DROPS = 3,   /* messages of no known protocol, dropped in the kernel */
    STAT_TLS_SKIPPED = 4,     /* ciphertext messages skipped (plaintext comes from uprobes) */
    STAT_CONN_MAP_FULL = 5,   /* connections not tracked: conns map full */
    STAT_CONNS_OPENED = 6,    /* connections tracked */
    STAT_CONNS_IGNORED = 7,   /* connections given up on (no known protocol) */
    STAT_IO_MAP_FULL = 8,     /* syscalls not followed: in-flight map full */
    STAT_IOV_UNWALKED = 9,    /* gathered I/O whose last iovecs went up uncopied (record budget) */
    STAT_RINGBUF_SPILLED = 10, /* records the ring buffer refused, sent through the spill ring */
    STAT_RINGBUF_WAKEUPS = 11, /* records that woke the agent (its unread data crossed a wakeup mark) */
    STAT_NOT_IP = 12,          /* sockets of another family than IP (unix, netlink) no longer followed */
    /* exchange pairing (the pairing section of guardian.bpf.c), reported as kernel.pair_* */
    STAT_PAIR_PAIRED = 13,   /* exchanges sent as one record */
    STAT_PAIR_HELD = 14,     /* request chunks held for their response */
    STAT_PAIR_ALONE = 15,    /* held chunks sent alone: another request chunk, close, no room */
    STAT_PAIR_TOO_BIG = 16,  /* request chunks over PAIR_PREFIX copied bytes, sent alone */
    STAT_PAIR_MAP_FULL = 17, /* request chunks not held: pair_held refused them */
    /* TLS uprobes (the TLS section of guardian.bpf.c), reported as tls.kernel.* */
    STAT_TLS_PLAINTEXT = 18,  /* plaintext chunks handed to emit_data */
    STAT_TLS_NO_FD = 19,      /* plaintext dropped: SSL object not yet tied to a socket */
    STAT_TLS_BOUND = 20,      /* SSL objects tied to a socket */
    STAT_TLS_READ_FAULT = 21, /* Go net.Conn -> fd chain not readable */
    /* capture.scope (bpf/scope.h), reported as kernel.scope_skipped */
    STAT_SCOPE_SKIPPED = 22,  /* calls and probe hits of processes outside the scope (cgroup, netns), not followed */
    STAT_TLS_WRITE_AGAIN = 23, /* SSL writes called again (after a failure, or the rest of a partial
                                * one) whose bytes had gone up at the first call: not sent again */
    /* user memory bpf_probe_read_user could not read (a page not resident): the bytes count in
     * the stream position, so userspace sees them as lost (a gap), never as nothing sent */
    STAT_USER_READ_FAILED = 24,
    STAT_MAX = 25,
};

/* A connection endpoint pair as seen by the process: local and remote. IPv4 addresses
 * are stored IPv4-mapped (::ffff:a.b.c.d) so one layout serves both families. Ports are
 * in host byte order. */
struct guardian_tuple {
    __u8 laddr[16];
    __u8 raddr[16];
    __u16 lport;
    __u16 rport;
    __u16 family; /* AF_INET or AF_INET6; 0 when unknown */
    __u16 _pad;
};

/* Value of the `conns` map, keyed by (tgid, fd). */
struct guardian_conn {
    __u64 conn_id;  /* unique per connection: an fd number is reused, this is not */
    __u64 bytes[2]; /* stream position per direction: lets userspace see lost events */
    struct guardian_tuple t;
    __u8 proto;     /* enum guardian_proto, fixed once detected */
    __u8 role;      /* enum guardian_role */
    __u8 flags;     /* enum guardian_conn_flags */
    __u8 attempts;  /* messages seen while the protocol was still unknown */
    __u8 transport; /* enum guardian_transport */
    __u8 held;      /* the pairing may hold a request chunk of it in pair_held; 0: it holds none,
                     * and a response chunk goes up without looking there */
    __u8 _pad[2];
    __u32 sock_ino; /* the socket's inode, read from the fd at the first record; 0: not yet */
    __u32 _pad2;
};

struct guardian_conn_key {
    __u32 tgid;
    __u32 fd;
};

/* Header of every ring-buffer record; EV_DATA records are followed by copied_len bytes. */
struct guardian_event {
    __u64 ts_ns;      /* CLOCK_MONOTONIC (bpf_ktime_get_ns): a write's entry, a read's exit */
    __u64 conn_id;
    __u64 pos;        /* stream offset of the first byte, per direction */
    __u32 tgid;
    __u32 tid;        /* thread that did the I/O: links calls made while serving a request */
    __u32 fd;
    __u32 total_len;  /* bytes the syscall moved */
    __u32 copied_len; /* bytes copied after this header (<= MAX_PAYLOAD) */
    __u32 sock_ino;   /* the socket's identity (its inode, as /proc/<pid>/fd shows it); 0: unknown */
    __u8 kind;        /* enum guardian_event_kind */
    __u8 proto;
    __u8 direction;   /* enum guardian_direction */
    __u8 role;
    __u8 msg_type;    /* detector's verdict on this message (MSG_NONE if not run) */
    __u8 source;      /* enum guardian_source */
    __u8 flags;       /* conn flags at the time of the event */
    __u8 transport;
    struct guardian_tuple t;
    char comm[16];    /* task name: names short-lived processes gone before userspace looks */
};

/* ======== TLS uprobes (bpf/tls.h, the TLS section of guardian.bpf.c) ========
 * Kept as one block: the TLS section's map keys and values, mirrored in capture/abi.py. */
/* Its counters are STAT_TLS_* in enum guardian_stat. */
/* What an SSL_read/SSL_write call is doing, between its entry and return probes (ssl 0: no call
 * in flight); the entry is the thread's and stays between calls. A write has no return probe
 * (`noret`): its plaintext goes up at its entry, or where its SSL* had no socket then at its first
 * send of application data, and it counts as in flight on its own socket until the thread's next
 * SSL probe. */
struct tls_call {
    __u64 ssl;
    __u64 buf;
    __u64 out_len; /* size_t * of the _ex variants (bytes done), 0 for SSL_read/SSL_write;
                    * a write's length (noret) */
    __u8 dir;
    __u8 source;
    __u8 pending;  /* this thread has an SSL* in tls_pending (set with it, cleared with it) */
    __u8 noret;    /* TLS_NORET_*: a write, its plaintext sent up (at the entry or since) or not yet */
    __u32 fd;      /* the socket (fd + 1) the call's SSL* is tied to, 0: not known yet */
    __u64 ts_ns;   /* at a write's entry whose plaintext goes up later (a wrapper's return, or
                    * an unsent one's first send): its stamp */
};
enum { TLS_NORET_NONE = 0, TLS_NORET_SENT = 1, TLS_NORET_UNSENT = 2 };

/* An SSL object's socket and its last write sent up at its entry (tls_ssl_fd's value): a write
 * that failed (WANT_WRITE: a send of its ciphertext failed) is called again with the same
 * buffer and length, and a partial write goes on with the rest (same end), neither of which goes
 * up again. */
struct tls_ssl {
    __u64 wbuf;
    __u32 wlen;
    __u32 fd;
    __u8 wfailed;  /* a send on the socket failed while that write was the thread's call */
    __u8 _pad[7];
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
/* ======== end of TLS uprobes ======== */

/* ======== exchange pairing (the pairing section of guardian.bpf.c) ========
 * With the capture option `pair`, a request chunk of an HTTP/1, Redis, Memcached, PostgreSQL or
 * MySQL connection is held in the
 * kernel and goes up inside the record of the response chunk that follows it (EV_PAIR):
 * one ring record per exchange instead of two, with each chunk's own header unchanged. */
#ifndef PAIR_PREFIX
#define PAIR_PREFIX 1024 /* request chunks with more copied bytes go up alone */
#endif

/* Its counters are STAT_PAIR_* in enum guardian_stat. */
/* Value of the `pair_held` map, keyed by conn_id: a request chunk's record as it would have
 * gone up (the first PAIR_PREFIX bytes of a guardian_record). */
struct guardian_pair_held {
    struct guardian_event ev;
    __u8 payload[PAIR_PREFIX];
};
/* ======== end of exchange pairing ======== */

#endif
