/* Guardian syscall capture. Hooks: syscall tracepoints (enter + exit; reads: exit only where
 * READS_AT_EXIT) for the data calls,
 * connect/accept/socket/close, and sock:inet_sock_set_state — tracepoints because this
 * kernel has no kprobes, and they are a stable ABI. Per traced syscall on a tracked socket
 * the cost is two map lookups and, for known protocols, one bounded copy into the ring
 * buffer; reads/writes on fds that are not tracked sockets cost one hash lookup.
 * Options come from cflags set by capture/loader.py (MAX_PAYLOAD, AGENT_PID, ...). */
#include "types.h"
#include "maps.h"
#include "sockaddr.h"
#include "sockfd.h"
#include "detect.h"
#include "scope.h"

#define GUARDIAN_EINPROGRESS 115

/* ---- counters and connection table ---- */
static __always_inline void stat_add(__u32 idx, __u64 n)
{
    __u64 *v = stats.lookup(&idx);
    if (v)
        *v += n;
}

static __always_inline int traced_tgid(__u32 tgid)
{
    if (tgid == AGENT_PID) /* never observe ourselves: our own output would feed back */
        return 0;
#if FILTER_PID
    if (tgid != FILTER_PID)
        return 0;
#endif
#if SCOPED
    /* capture.scope's cgroup / network namespace (bpf/scope.h); an unfilled map follows nobody */
    __u32 zero = 0;
    struct guardian_scope *s = scope_map.lookup(&zero);
    if (!s || !scope_allows(s)) {
        stat_add(STAT_SCOPE_SKIPPED, 1);
        return 0;
    }
#endif
    return 1;
}

/* Whether data is followed yet (maps.h: armed); an array lookup the verifier inlines. */
static __always_inline int capture_armed(void)
{
    __u32 zero = 0;
    __u32 *on = armed.lookup(&zero);
    return on && *on;
}

static __always_inline struct guardian_conn *new_conn(struct guardian_conn_key *key, __u8 role,
                                                      __u8 transport)
{
    struct guardian_conn c = {};
    c.conn_id = (bpf_ktime_get_ns() << 8) ^ ((__u64)key->tgid << 24) ^ key->fd;
    c.role = role;
    c.transport = transport;
    if (conns.update(key, &c) != 0) {
        stat_add(STAT_CONN_MAP_FULL, 1);
        return 0;
    }
    return conns.lookup(key);
}

/* One record into the ring buffer; 0 when it took it.
 * The kernel's ring buffer lock (rqspinlock since Linux 6.15) can refuse a reservation
 * while another CPU writes to the same ring, though the ring has room: rare, short and
 * scattered, with the ring far from full, and retrying the same ring still lost some
 * (`python -m bench.capture --only rate` shows the refusals in its counters).
 * Such a record goes to a second, small ring instead (a lock nobody else is holding);
 * the agent reads both and puts records back in time order (capture/ringbuf.py). A ring
 * that is really full (the agent behind) spills over into it too, until it fills. */
/* Wakeups: the agent reads the rings on a short timer (capture/live.py POLL_MS), so a record
 * wakes it only when it takes the unread data of the ring across a multiple of WAKEUP_BYTES (a
 * burst the agent should not sleep through; a power of two): a few wakeups per ring's worth of
 * data, and a crossing that two CPUs race past is caught at the next multiple. The kernel's
 * default wakes the reader at the first record after it caught up (an irq_work and a context
 * switch every few records under steady load); forcing a wakeup on every record past a mark
 * costs an irq_work per record while the agent is already reading. The spill ring never wakes:
 * it is read with every read of the main ring. */
static __always_inline int ringbuf_send(void *data, __u64 size)
{
    __u64 unread = events.perf_read(BPF_RB_AVAIL_DATA);
    int wake = unread / WAKEUP_BYTES != (unread + size) / WAKEUP_BYTES;
    if (events.ringbuf_output(data, size, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP) == 0) {
        if (wake)
            stat_add(STAT_RINGBUF_WAKEUPS, 1);
        return 0;
    }
    if (spill.ringbuf_output(data, size, BPF_RB_NO_WAKEUP) == 0) {
        stat_add(STAT_RINGBUF_SPILLED, 1);
        return 0;
    }
    stat_add(STAT_RINGBUF_DROPS, 1);
    return -1;
}

/* ======== exchange pairing (capture option `pair`: -DPAIR_HTTP1=1) ======================
 * Per request, both ends of a local HTTP/1 exchange each see a request chunk and a response
 * chunk: four ring records, each a userspace callback. Here the request chunk of a connection
 * of a request/response protocol (pair_proto) is held in `pair_held` (its record as it would have gone up) and sent inside the
 * record of the next response chunk on the same connection (EV_PAIR: the response's record,
 * then the held record after its copied bytes). Nothing is parsed here: userspace feeds both
 * chunks to the same parser in the same order, so the spans are those of the unpaired path
 * whatever the stream holds (pipelining, chunked or long bodies, upgrades). Any other record
 * of the connection (another request chunk, a close) first sends the held chunk alone, so a
 * connection's chunks always arrive in order; response chunks past the first go up as before.
 * A request whose answer never comes and whose process exits without close() stays held until
 * the LRU map evicts it (userspace then has no request to report as unanswered). */
#if PAIR_HTTP1 && MAX_PAYLOAD >= 1024
#define PAIRING 1
BPF_TABLE("lru_hash", __u64, struct guardian_pair_held, pair_held, PAIR_CONNS);
#endif

/* Protocols whose connections carry one request/response exchange at a time per thread, in
 * order (pipelines keep it): HTTP/1, Redis, Memcached, PostgreSQL, MySQL. Multiplexed ones
 * (HTTP/2, Kafka, Cassandra, MongoDB) are read and written by different threads at once. */
static __always_inline int pair_proto(__u8 proto)
{
    return proto == PROTO_HTTP1 || proto == PROTO_REDIS || proto == PROTO_MEMCACHED ||
           proto == PROTO_POSTGRES || proto == PROTO_MYSQL;
}

/* A connection's slot in pair_held stays from its first request chunk to its close (or the
 * LRU's eviction) and is rewritten in place: a hash update and delete per exchange, each with a
 * copy of the whole slot, cost more than the pairing saves. ev.kind says whether it holds a
 * chunk (EV_DATA) or not (0); the connection's `held` says whether to look at all: a response
 * chunk that follows no held request (the next chunks of a long answer, a server's push) goes up
 * without a lookup. */

/* Send the request chunk held in slot `h`, if any, alone. */
static __always_inline void pair_release_slot(struct guardian_pair_held *h)
{
#ifdef PAIRING
    if (!h || !h->ev.kind)
        return;
    __u64 n = h->ev.copied_len;
    asm volatile("" : "+r"(n));
    if (n <= PAIR_PREFIX && ringbuf_send(h, sizeof(struct guardian_event) + n) == 0)
        stat_add(STAT_EVENTS, 1);
    h->ev.kind = 0;
    stat_add(STAT_PAIR_ALONE, 1);
#endif
}

/* The connection `conn_id` is closed: its held chunk, if any, goes up alone and its slot goes. */
static __always_inline void pair_release(__u64 conn_id)
{
#ifdef PAIRING
    struct guardian_pair_held *h = pair_held.lookup(&conn_id);
    if (!h)
        return;
    pair_release_slot(h);
    pair_held.delete(&conn_id);
#endif
}

/* The record in `r` (header filled, `n` bytes copied) into the ring buffer, through the
 * pairing when it is on: 0 when a record was written, 1 when it was held, -1 if lost. */
static __always_inline int pair_send(struct guardian_record *r, struct guardian_conn *c, __u8 dir, __u64 n)
{
#ifdef PAIRING
    if (pair_proto(c->proto) && c->role != ROLE_UNKNOWN && n <= MAX_PAYLOAD) {
        __u64 id = c->conn_id;
        if (dir == (c->role == ROLE_CLIENT ? DIR_EGRESS : DIR_INGRESS)) {
            struct guardian_pair_held *h = pair_held.lookup(&id);
            pair_release_slot(h); /* a request chunk already waiting goes first */
            __u64 m = n;
            asm volatile("" : "+r"(m)); /* the verifier needs the bound on this register */
            if (m > PAIR_PREFIX) {
                stat_add(STAT_PAIR_TOO_BIG, 1);
            } else if (h) {
                /* the header and the copied bytes only, not the whole slot */
                if (bpf_probe_read_kernel(h, sizeof(struct guardian_event) + m, r) == 0) {
                    c->held = 1;
                    stat_add(STAT_PAIR_HELD, 1);
                    return 1;
                }
                h->ev.kind = 0;
            } else if (pair_held.update(&id, (struct guardian_pair_held *)r) == 0) {
                c->held = 1;
                stat_add(STAT_PAIR_HELD, 1);
                return 1;
            } else {
                stat_add(STAT_PAIR_MAP_FULL, 1);
            }
            c->held = 0;
        } else if (c->held) { /* a response chunk: only the first after a held request looks */
            c->held = 0;
            struct guardian_pair_held *h = pair_held.lookup(&id);
            if (h && h->ev.kind) {
                __u64 off = n, rn = h->ev.copied_len;
                asm volatile("" : "+r"(off), "+r"(rn)); /* the verifier needs the bounds on these registers */
                if (off <= MAX_PAYLOAD && rn <= PAIR_PREFIX &&
                    bpf_probe_read_kernel(r->payload + off, sizeof(struct guardian_event) + rn, h) == 0) {
                    r->ev.kind = EV_PAIR;
                    h->ev.kind = 0;
                    stat_add(STAT_PAIR_PAIRED, 1);
                    return ringbuf_send(r, 2 * sizeof(struct guardian_event) + off + rn);
                }
                pair_release_slot(h);
            }
        }
    }
#endif
    return ringbuf_send(r, sizeof(struct guardian_event) + n);
}
/* ======== end of exchange pairing ======================================================== */

/* ---- the data path: bounded copy, detection on the first messages, ring buffer.
 * Also called by the TLS uprobes with their own `source`. ---- */
#define MAX_DETECT_ATTEMPTS 8

/* Send the message whose first `n` bytes are in the scratch record `r`: detection while
 * the connection's protocol is unknown, then one ring-buffer record. */
static __always_inline void send_record(struct guardian_record *r, struct guardian_conn_key *key,
                                        struct guardian_conn *c, __u8 dir, __u32 len, __u64 n,
                                        __u8 source, const void *peer_addr, __u64 ts)
{
    asm volatile("" : "+r"(n)); /* keep clang from dropping the mask the verifier needs */
    n &= 2 * MAX_PAYLOAD - 1;
    __u8 msg_type = MSG_NONE;
    if (c->proto == PROTO_UNKNOWN) {
        if (source == SRC_SYSCALL && detect_tls(r->payload, n)) {
            c->flags |= CONN_ENCRYPTED;
            /* a hello starts PROTO_TLS_HANDSHAKE (detect_protocol below): a failed handshake
             * never has plaintext, so its records are all there is to see */
            if (!detect_tls_handshake(r->payload, n)) {
                stat_add(STAT_TLS_SKIPPED, 1);
                return;
            }
        }
        __u8 proto = detect_protocol(r->payload, n, &msg_type, c->transport == TRANSPORT_UDP);
        if (proto == PROTO_UNKNOWN) {
            stat_add(STAT_UNKNOWN_DROPS, 1);
            c->bytes[dir & 1] += len;
            if (++c->attempts >= MAX_DETECT_ATTEMPTS) {
                c->flags |= CONN_IGNORED;
                stat_add(STAT_CONNS_IGNORED, 1);
            }
            return;
        }
        c->proto = proto;
        stat_add(STAT_CONNS_OPENED, 1);
        if (c->role == ROLE_UNKNOWN) /* a request we send makes us the client */
            c->role = ((msg_type == MSG_REQUEST) == (dir == DIR_EGRESS)) ? ROLE_CLIENT : ROLE_SERVER;
    }
    if (len > n)
        stat_add(STAT_TRUNCATED, 1);

    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_event *ev = &r->ev;
    ev->ts_ns = ts ? ts : bpf_ktime_get_ns();
    ev->conn_id = c->conn_id;
    ev->pos = c->bytes[dir & 1];
    ev->tgid = key->tgid;
    ev->tid = (__u32)id;
    ev->fd = key->fd;
    ev->total_len = len;
    ev->copied_len = n;
    ev->sock_ino = c->sock_ino;
    ev->kind = EV_DATA;
    ev->proto = c->proto;
    ev->direction = dir;
    ev->role = c->role;
    ev->msg_type = msg_type;
    ev->source = source;
    ev->flags = c->flags;
    ev->transport = c->transport;
    ev->t = c->t;
    bpf_get_current_comm(ev->comm, sizeof(ev->comm));
    if (peer_addr) /* unconnected UDP: the peer is per datagram */
        read_sockaddr(peer_addr, &ev->t, 1);
    c->bytes[dir & 1] += len;

    if (pair_send(r, c, dir, n) == 0)
        stat_add(STAT_EVENTS, 1);
}

/* Records of a TLS handshake that go up (PROTO_TLS_HANDSHAKE): enough for the hellos, the
 * server's flight, Finished, alerts and the first application data; then, or as soon as
 * the uprobes report plaintext (tls_emit), the ciphertext is skipped. */
#define MAX_TLS_HANDSHAKE_MSGS 12

/* skipped ciphertext does not advance the stream position: positions count the plaintext
 * the TLS uprobes report (after the handshake records, if any), so userspace sees no false gaps */
static __always_inline int skip_ciphertext(struct guardian_conn *c, __u8 source)
{
    if (source == SRC_SYSCALL && (c->flags & CONN_ENCRYPTED)) {
        if (c->proto == PROTO_TLS_HANDSHAKE && c->attempts < MAX_TLS_HANDSHAKE_MSGS) {
            c->attempts++;
            return 0;
        }
        stat_add(STAT_TLS_SKIPPED, 1);
        return 1;
    }
    return 0;
}

/* One message from one user buffer (read/write/send/recv, TLS uprobes). */
static __always_inline void emit_data(struct guardian_conn_key *key, struct guardian_conn *c,
                                      __u8 dir, const void *ubuf, __u32 len, __u8 source,
                                      const void *peer_addr, __u64 ts)
{
    if (len == 0 || skip_ciphertext(c, source))
        return;
    __u32 zero = 0;
    struct guardian_record *r = scratch.lookup(&zero);
    if (!r)
        return;
    __u64 n = len < MAX_PAYLOAD ? len : MAX_PAYLOAD;
    asm volatile("" : "+r"(n));
    n &= 2 * MAX_PAYLOAD - 1;
    if (bpf_probe_read_user(r->payload, n, ubuf) != 0) {
        /* page not resident: nothing we can copy without faulting. The bytes still count in
         * the stream position, so userspace sees a gap (a lost answer would otherwise leave its
         * request waiting for the next one's) */
        stat_add(STAT_USER_READ_FAILED, 1);
        c->bytes[dir & 1] += len;
        return;
    }
    send_record(r, key, c, dir, len, n, source, peer_addr, ts);
}

static __always_inline void emit_close(struct guardian_conn_key *key, struct guardian_conn *c)
{
    struct guardian_event ev = {};
    ev.ts_ns = bpf_ktime_get_ns();
    ev.conn_id = c->conn_id;
    ev.sock_ino = c->sock_ino;
    ev.tgid = key->tgid;
    ev.tid = (__u32)bpf_get_current_pid_tgid();
    ev.fd = key->fd;
    ev.kind = EV_CLOSE;
    ev.proto = c->proto;
    ev.role = c->role;
    ev.flags = c->flags;
    ev.transport = c->transport;
    ev.t = c->t;
    bpf_get_current_comm(ev.comm, sizeof(ev.comm));
    ringbuf_send(&ev, sizeof(ev));
}


#define MAX_IOV 16         /* iovecs walked per record */
#define MAX_IOV_RECORDS 32 /* records per syscall: a tail call each, the kernel allows 33 */

struct guardian_iovec {
    __u64 base;
    __u64 len;
};

/* struct user_msghdr prefix: name, namelen (+pad), iov, iovlen */
struct guardian_msghdr {
    __u64 name;
    __u32 namelen;
    __u32 _pad;
    __u64 iov;
    __u64 iovlen;
};

/* Give tracked connection `c` (the calling process's `fd`) its socket's identity and transport
 * and, where the tuple is still unknown, the addresses the socket has: once per connection, at
 * its first record (an unconnected UDP socket has its local port only after its first send or
 * bind). */
static __always_inline void sock_identify(__u32 fd, struct guardian_conn *c)
{
#ifdef OFF_TASK_FILES
    /* read until it has a local end: a socket first seen at a send's entry (one older than the
     * agent) may be bound by that very send */
    if (c->sock_ino && ((c->flags & CONN_TUPLE_KNOWN) || c->t.lport))
        return;
    struct guardian_tuple t = {};
    __u32 ino = 0;
    __u16 type = 0;
    int got = sock_from_fd(fd, &t, &ino, &type);
    if (got == SOCK_NOT_IP) {
        /* send/recv calls track any socket (followed_conn): a unix or netlink one carries no
         * traffic of ours, and its bytes could pass a detector */
        c->flags |= CONN_IGNORED;
        stat_add(STAT_NOT_IP, 1);
        return;
    }
    c->sock_ino = ino;
    if (ino) /* a socket older than the agent was taken for TCP (followed_conn) */
        c->transport = type == 2 ? TRANSPORT_UDP : TRANSPORT_TCP;
    if (c->flags & CONN_TUPLE_KNOWN)
        return;
    if (got == (SOCK_LOCAL | SOCK_REMOTE)) {
        c->t = t;
        c->flags |= CONN_TUPLE_KNOWN;
    } else if (got & SOCK_LOCAL) { /* keep the remote that connect() or a datagram gave */
        __builtin_memcpy(c->t.laddr, t.laddr, 16);
        c->t.lport = t.lport;
        c->t.family = t.family;
    }
#endif
}

/* The calling process's tracked socket `fd`, if its traffic is followed. `new_transport`
 * >= 0 creates the entry for a socket older than the agent (send/recv-family calls are on
 * sockets by definition); -1 skips unknown fds (read/write on a file or pipe). */
static __always_inline struct guardian_conn *followed_conn(__u64 id, __u32 fd, int new_transport)
{
    __u32 tgid = id >> 32;
    if (!traced_tgid(tgid) || !capture_armed())
        return 0;
    struct guardian_conn_key key = {.tgid = tgid, .fd = fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c) {
        if (new_transport < 0)
            return 0;
        c = new_conn(&key, ROLE_UNKNOWN, new_transport);
        if (!c)
            return 0;
        sock_identify(fd, c);
    }
    if (c->flags & CONN_IGNORED)
        return 0;
#if FILTER_PORT
    /* --port: drop other connections here, not in userspace (where the tuple is unknown the
     * event still goes up and userspace filters) */
    if ((c->flags & CONN_TUPLE_KNOWN) && c->t.lport != FILTER_PORT && c->t.rport != FILTER_PORT)
        return 0;
#endif
    return c;
}

/* TLS section (end of file): ties an SSL object waiting for its socket to this one; says
 * whether the syscall's result matters to the thread's SSL write (TLS_IO_CHECK:
 * tls_write_failed) or the write's plaintext is to go up now (TLS_IO_FLUSH: guardian_tls_flush). */
enum { TLS_IO_NONE = 0, TLS_IO_CHECK = 1, TLS_IO_FLUSH = 2 };
static __always_inline int tls_io_next(struct tls_call *call, __u8 dir)
{
    if (dir != DIR_EGRESS)
        return TLS_IO_NONE;
    return call->noret == TLS_NORET_UNSENT ? TLS_IO_FLUSH
           : call->noret == TLS_NORET_SENT ? TLS_IO_CHECK : TLS_IO_NONE;
}
/* A send whose first TLS record is application data (23), or the change_cipher_spec (20) that
 * starts a last handshake flight: not a handshake record (22) that an SSL_write sends while it
 * still does the handshake (its plaintext goes out later, maybe in another call) */
static __always_inline int tls_app_data(__u64 buf)
{
    __u8 type = 0;
    bpf_probe_read_user(&type, 1, (void *)buf);
    return type == 23 || type == 20;
}
static __always_inline int tls_socket_io(struct guardian_conn_key *key, struct guardian_conn *c,
                                         __u64 id, __u8 dir, int tls_socket);
static __always_inline void tls_write_failed(__u64 id);

static __always_inline int io_enter(__u32 fd, __u64 buf, __u32 vlen, __u8 dir, __u8 shape,
                                    __u64 addr, int is_socket_call)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_conn *c = followed_conn(id, fd, is_socket_call ? TRANSPORT_TCP : -1);
    if (!c)
        return 0;
    if (c->flags & CONN_TLS_PLAINTEXT) {
        /* ciphertext of a socket whose plaintext the TLS probes deliver: nothing to copy and no
         * exit work, only the tie of the SSL object in this call to its socket (which does not
         * need the syscall's result) */
        struct guardian_conn_key key = {.tgid = id >> 32, .fd = fd};
        int check = tls_socket_io(&key, c, id, dir, 1);
        stat_add(STAT_TLS_SKIPPED, 1);
        /* only sends: an event loop reads its sockets until EAGAIN after every call */
        if (check != TLS_IO_CHECK || dir != DIR_EGRESS)
            return 0;
        /* the SSL write went up at its entry: whether it fails shows only here (tls_write_failed) */
        struct guardian_io tio = {.fd = fd, .direction = dir, .shape = IO_TLS_CHECK, .live = 1};
        struct guardian_io *tp = active_io.lookup(&id);
        if (tp)
            *tp = tio;
        else
            active_io.update(&id, &tio);
        return 0;
    }
    /* reads are stamped at their exit (io_exit): no clock read here */
    struct guardian_io io = {.buf = buf, .addr = addr, .fd = fd, .vlen = vlen, .direction = dir,
                             .shape = shape, .live = 1, .ts_ns = dir == DIR_EGRESS ? bpf_ktime_get_ns() : 0};
    struct guardian_io *p = active_io.lookup(&id);
    if (p)
        *p = io;
    else if (active_io.update(&id, &io) != 0)
        stat_add(STAT_IO_MAP_FULL, 1);
    return 0;
}

/* ---- gathered I/O (readv/writev/sendmsg/recvmsg): one syscall, several records ----
 * grpc C-core sends frame headers, HPACK blocks and message slices as separate iovecs, often
 * more than MAX_IOV of them and with big DATA slices in the middle. The iovecs are walked in
 * records of consecutive stream bytes, each record one run of guardian_iov_send (or _recv)
 * that tail-calls itself for the next (the walk's state is in `iov_walk`); every record's
 * `pos` is exact, and the loop exists once in the object, not once per exit tracepoint.
 * Written iovecs are copied whole, back to back; one that does not fit in the record starts
 * the next record, one bigger than MAX_PAYLOAD sends its prefix and its tail as uncopied
 * length (with grpc that is a DATA payload, which the HTTP/2 parser skips by length). Read
 * buffers hold frames anywhere: they are copied on, record after record. A UDP datagram stays
 * one record. What is left after MAX_IOV_RECORDS records goes up as the last record's
 * uncopied length and is counted (STAT_IOV_UNWALKED). */

/* The next record of the walk in `iov_walk`. One program per direction (the verifier then
 * sees one simple loop each); tail-called from emit_iov, then from itself. */
static __always_inline int iov_record(void *ctx, __u8 dir)
{
    __u32 zero = 0;
    struct guardian_iov_state *w = iov_walk.lookup(&zero);
    if (!w)
        return 0;
    struct guardian_conn_key key = w->key;
    struct guardian_conn *c = conns.lookup(&key);
    struct guardian_record *r = scratch.lookup(&zero);
    if (!c || !r)
        return 0;
    /* a plain buffer is walked by the read-side program (frames anywhere: record after
     * record) whatever its direction, which the records carry */
    __u8 plain = dir == DIR_INGRESS && w->plain;
    __u8 rdir = plain ? (w->dir & 1) : dir;
    __u32 idx = w->idx, ioff = dir == DIR_INGRESS ? w->ioff : 0, left = w->left, vlen = w->vlen, off = 0, covered = 0;
    int cut = 0, broken = 0; /* record ends inside an iovec; the array is unreadable */
#pragma unroll
    for (int i = 0; i < MAX_IOV; i++) {
        if (idx >= vlen || left == 0 || off >= MAX_PAYLOAD || cut || broken)
            break;
        struct guardian_iovec v = {.base = w->iov, .len = ioff + left};
        if (!plain && bpf_probe_read_user(&v, sizeof(v), (void *)(w->iov + idx * sizeof(v))) != 0) {
            broken = 1; /* the array itself is unreadable: give up on the rest */
            stat_add(STAT_USER_READ_FAILED, 1);
            break;
        }
        __u64 rest = v.len > ioff ? v.len - ioff : 0;
        __u32 used = rest < left ? (__u32)rest : left; /* this iovec's bytes in the syscall */
        __u32 space = MAX_PAYLOAD - off;
        __u32 take = used;
        if (used > space) {
            if (dir == DIR_INGRESS)
                take = space; /* read buffers hold any frames: the next record goes on here */
            else if (off)
                break; /* a written iovec that does not fit starts the next record */
            else
                cut = 1; /* bigger than a record: its tail goes up as uncopied length */
        }
        __u64 n = take < space ? take : space;
        __u64 o = off;
        asm volatile("" : "+r"(n), "+r"(o));
        n &= 2 * MAX_PAYLOAD - 1; /* o < MAX_PAYLOAD, n < 2 * MAX_PAYLOAD: fits 3 * MAX_PAYLOAD */
        o &= MAX_PAYLOAD - 1;
        if (n && bpf_probe_read_user(r->payload + o, n, (const void *)(v.base + ioff)) != 0) {
            n = 0; /* page not resident: the iovec's bytes go up as uncopied length */
            stat_add(STAT_USER_READ_FAILED, 1);
            take = used;
            cut = 1;
        }
        off += n;
        covered += take;
        left -= take;
        if (take == used) {
            idx++;
            ioff = 0;
        } else {
            ioff += take;
        }
    }
    w->idx = idx;
    w->ioff = ioff;
    w->left = left;
    w->copied = off;
    w->covered = covered;
    w->broken = broken;
    w->records++;
    /* read the record's numbers back from the map: the verifier then sees one state here,
     * not one per way out of the loop, and checks send_record (detection) once */
    asm volatile("" ::: "memory");
    idx = w->idx;
    left = w->left;
    off = w->copied;
    covered = w->covered;
    broken = w->broken;
    int udp = c->transport == TRANSPORT_UDP; /* a datagram is one message: one record */
    int more = left && idx < vlen && !broken && !udp && w->records < MAX_IOV_RECORDS;
    if (left && !more) {
        if (!udp)
            stat_add(STAT_IOV_UNWALKED, 1);
        covered += left; /* the rest of the syscall: uncopied length of this last record */
    }
    if (off || c->proto != PROTO_UNKNOWN)
        send_record(r, &key, c, rdir, covered, off, SRC_SYSCALL,
                    w->records == 1 ? (const void *)w->peer : 0, w->ts_ns);
    else
        c->bytes[rdir & 1] += covered; /* nothing readable: userspace sees the gap */
    if (w->records == 1)
        tls_socket_io(&key, c, bpf_get_current_pid_tgid(), rdir, 0);
    /* a first record that matched no protocol ends the walk (the rest is not its start);
     * skipped ciphertext does not count in positions (skip_ciphertext) */
    if (!more || c->proto == PROTO_UNKNOWN || (c->flags & CONN_IGNORED)) {
        if (more && !(c->flags & CONN_ENCRYPTED))
            c->bytes[rdir & 1] += left;
        return 0;
    }
    iov_tail.call(ctx, dir);
    stat_add(STAT_IOV_UNWALKED, 1); /* tail call failed (not registered yet): a gap */
    c->bytes[rdir & 1] += left;
    return 0;
}

int guardian_iov_send(void *ctx) { return iov_record(ctx, DIR_EGRESS); }
int guardian_iov_recv(void *ctx) { return iov_record(ctx, DIR_INGRESS); }

/* Start walking the iovec array of a gathered I/O of `total` bytes. Returns only if the walk
 * did not start (then the TLS tie-up is the caller's). */
static __always_inline void emit_iov(void *ctx, struct guardian_conn_key *key,
                                     struct guardian_conn *c, __u8 dir, __u64 iov, __u32 vlen,
                                     __u32 total, __u64 peer, __u64 ts)
{
    if (total == 0 || skip_ciphertext(c, SRC_SYSCALL))
        return;
    __u32 zero = 0;
    struct guardian_iov_state *w = iov_walk.lookup(&zero);
    if (!w)
        return;
    w->key = *key;
    w->iov = iov;
    w->peer = peer;
    w->vlen = vlen;
    w->idx = 0;
    w->ioff = 0;
    w->left = total;
    w->records = 0;
    w->plain = 0;
    w->ts_ns = ts;
    iov_tail.call(ctx, dir & 1);
    stat_add(STAT_IOV_UNWALKED, 1); /* not registered yet (loader): a gap in the stream */
    c->bytes[dir & 1] += total;
}

/* A plain read/write on an HTTP/2 connection bigger than a record: HTTP/2 packs the frames
 * of many streams into one read or write (curl reads 16 KiB, grpc-go 32 KiB at once), so
 * frames anywhere in it must reach the parser. The buffer is walked in records like a
 * one-iovec read (iov_record). Returns only if the walk did not start. */
static __always_inline void emit_plain_walk(void *ctx, struct guardian_conn_key *key, __u8 dir,
                                            __u64 buf, __u32 total, __u64 ts)
{
    __u32 zero = 0;
    struct guardian_iov_state *w = iov_walk.lookup(&zero);
    if (!w)
        return;
    w->key = *key;
    w->iov = buf;
    w->peer = 0;
    w->vlen = 1;
    w->idx = 0;
    w->ioff = 0;
    w->left = total;
    w->records = 0;
    w->plain = 1;
    w->dir = dir;
    w->ts_ns = ts;
    iov_tail.call(ctx, DIR_INGRESS);
}

static __always_inline int io_done(void *ctx, __u64 id, struct guardian_io io, long ret,
                                   struct guardian_conn *c);

static __always_inline int io_exit(void *ctx, long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_io *p = active_io.lookup(&id);
    if (!p || !p->live)
        return 0;
    struct guardian_io io = *p;
    p->live = 0;
    if (io.shape == IO_TLS_CHECK) {
        if (ret < 0)
            tls_write_failed(id);
        return 0;
    }
    if (ret <= 0)
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = io.fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    return io_done(ctx, id, io, ret, c);
}

#if READS_AT_EXIT
#include <uapi/linux/ptrace.h>
/* A read's exit, with no program at its entry: the call's arguments are the registers it was
 * made with, which a syscall leaves as they were (x86_64; the loader's READS_AT_EXIT). A read
 * that returns nothing (an event loop reads every socket until EAGAIN) costs its exit tracepoint
 * and a compare; a read on a socket whose plaintext the TLS probes deliver ties the thread's SSL
 * object to its socket here, as io_enter does for sends (a read that got nothing has nothing to
 * tie: the SSL read it serves returns nothing either). */
static __always_inline int read_exit(void *ctx, long ret, __u8 shape, int is_socket_call)
{
    if (ret <= 0)
        return 0;
    __u64 id = bpf_get_current_pid_tgid();
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    __u64 fd = 0, buf = 0, vlen = 0, addr = 0;
    bpf_probe_read_kernel(&fd, 8, &PT_REGS_PARM1_SYSCALL(regs));
    struct guardian_conn *c = followed_conn(id, (__u32)fd, is_socket_call ? TRANSPORT_TCP : -1);
    if (!c)
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = (__u32)fd};
    if (c->flags & CONN_TLS_PLAINTEXT) {
        tls_socket_io(&key, c, id, DIR_INGRESS, 1);
        stat_add(STAT_TLS_SKIPPED, 1);
        return 0;
    }
    bpf_probe_read_kernel(&buf, 8, &PT_REGS_PARM2_SYSCALL(regs));
    if (shape == IO_IOVEC)
        bpf_probe_read_kernel(&vlen, 8, &PT_REGS_PARM3_SYSCALL(regs));
    else if (is_socket_call && shape == IO_PLAIN) /* recvfrom's sockaddr */
        bpf_probe_read_kernel(&addr, 8, &PT_REGS_PARM5_SYSCALL(regs));
    struct guardian_io io = {.buf = buf, .addr = addr, .fd = (__u32)fd, .vlen = (__u32)vlen,
                             .direction = DIR_INGRESS, .shape = shape};
    return io_done(ctx, id, io, ret, c);
}
#endif

/* The data of a syscall on tracked connection `c` that moved `ret` > 0 bytes. */
static __always_inline int io_done(void *ctx, __u64 id, struct guardian_io io, long ret,
                                   struct guardian_conn *c)
{
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = io.fd};
    sock_identify(io.fd, c);
    /* Written bytes are stamped when the write began, read bytes when the read returned:
     * the peer can read a write before the writer's exit runs (a loopback write wakes the
     * reader, which can preempt the writer for milliseconds), and exit stamps then put a
     * callee's answer after the caller read it. Entry stamps keep cause before effect. */
    __u64 ts = io.direction == DIR_EGRESS ? io.ts_ns : 0;
    if (io.shape == IO_PLAIN) {
        if ((__u32)ret > MAX_PAYLOAD && c->proto == PROTO_HTTP2 && !(c->flags & CONN_ENCRYPTED))
            emit_plain_walk(ctx, &key, io.direction, io.buf, (__u32)ret, ts); /* returns if not started */
        emit_data(&key, c, io.direction, (const void *)io.buf, (__u32)ret, SRC_SYSCALL,
                  (const void *)io.addr, ts);
    } else if (io.shape == IO_IOVEC) {
        emit_iov(ctx, &key, c, io.direction, io.buf, io.vlen, (__u32)ret, 0, ts);
    } else {
        struct guardian_msghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)io.buf) != 0) {
            stat_add(STAT_USER_READ_FAILED, 1);
            c->bytes[io.direction & 1] += (__u32)ret; /* a gap, as in emit_data */
            return 0;
        }
        /* msg_name: the peer of an unconnected UDP socket (dig, DNS servers) */
        emit_iov(ctx, &key, c, io.direction, m.iov, (__u32)m.iovlen, (__u32)ret,
                 m.namelen ? m.name : 0, ts);
    }
    /* a write not tied to its socket at its entry goes up at its first sent application data
     * (with an fd BIO inside the call, after the handshake records of an SSL_write that
     * finishes the handshake): a tail call, so that only one program holds that emit code */
    if (tls_socket_io(&key, c, id, io.direction, 0) == TLS_IO_FLUSH &&
        (io.shape != IO_PLAIN || tls_app_data(io.buf)))
        tls_tail.call(ctx, 0);
    return 0;
}

/* ---- data syscalls ----
 * Writes have an enter program (their bytes are stamped there: io_exit) and an exit program;
 * reads, where READS_AT_EXIT, an exit program only (read_exit): per pgbench -S query that is
 * four fewer program runs of about twelve (the two reads that return the messages and the empty
 * one after each), per redis-benchmark command two of eight (`python -m bench.dbload --bpf-time`). */
TRACEPOINT_PROBE(syscalls, sys_enter_write)
{ return io_enter(args->fd, (__u64)args->buf, 0, DIR_EGRESS, IO_PLAIN, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{ return io_enter(args->fd, (__u64)args->vec, args->vlen, DIR_EGRESS, IO_IOVEC, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{ return io_enter(args->fd, (__u64)args->buff, 0, DIR_EGRESS, IO_PLAIN, (__u64)args->addr, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{ return io_enter(args->fd, (__u64)args->msg, 0, DIR_EGRESS, IO_MSGHDR, 0, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return io_exit(args, args->ret); }
#if READS_AT_EXIT
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return read_exit(args, args->ret, IO_PLAIN, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return read_exit(args, args->ret, IO_IOVEC, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return read_exit(args, args->ret, IO_PLAIN, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return read_exit(args, args->ret, IO_MSGHDR, 1); }
#else
TRACEPOINT_PROBE(syscalls, sys_enter_read)
{ return io_enter(args->fd, (__u64)args->buf, 0, DIR_INGRESS, IO_PLAIN, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{ return io_enter(args->fd, (__u64)args->vec, args->vlen, DIR_INGRESS, IO_IOVEC, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{ return io_enter(args->fd, (__u64)args->ubuf, 0, DIR_INGRESS, IO_PLAIN, (__u64)args->addr, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return io_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{ return io_enter(args->fd, (__u64)args->msg, 0, DIR_INGRESS, IO_MSGHDR, 0, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return io_exit(args, args->ret); }
#endif

/* ---- connection lifecycle ---- */
static __always_inline int sockcall_enter(__u32 fd, __u64 addr)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!traced_tgid(id >> 32))
        return 0;
    struct guardian_sockcall s = {.addr = addr, .fd = fd};
    active_sockcall.update(&id, &s);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    int family = args->family, type = args->type & 0xf;
    if ((family != GUARDIAN_AF_INET && family != GUARDIAN_AF_INET6) || (type != 1 && type != 2))
        return 0; /* only TCP/UDP over IP: SOCK_STREAM = 1, SOCK_DGRAM = 2 */
    return sockcall_enter(0, type == 2 ? TRANSPORT_UDP : TRANSPORT_TCP);
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_sockcall *s = active_sockcall.lookup(&id);
    if (!s)
        return 0;
    __u8 transport = (__u8)s->addr;
    active_sockcall.delete(&id);
    if (args->ret < 0)
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = (__u32)args->ret};
    new_conn(&key, ROLE_UNKNOWN, transport);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{ return sockcall_enter(args->fd, (__u64)args->uservaddr); }

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_sockcall *s = active_sockcall.lookup(&id);
    if (!s)
        return 0;
    struct guardian_sockcall call = *s;
    active_sockcall.delete(&id);
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = call.fd};
    struct guardian_tuple *st = connect_tuple.lookup(&key);
    struct guardian_tuple t = {};
    if (st) {
        t = *st;
        connect_tuple.delete(&key);
    }
    if (args->ret != 0 && args->ret != -GUARDIAN_EINPROGRESS)
        return 0;
    struct guardian_conn *c = conns.lookup(&key);
    __u8 transport = c ? c->transport : TRANSPORT_TCP;
    /* a (re)connected socket is a new connection: fresh id, positions, protocol */
    c = new_conn(&key, ROLE_CLIENT, transport);
    if (!c)
        return 0;
    if (st) {
        c->t = t;
        c->flags |= CONN_TUPLE_KNOWN;
    } else {
        read_sockaddr((const void *)call.addr, &c->t, 1);
    }
    return 0;
}

/* accept()/accept4() returned `ret`. A thread already blocked in accept() when the agent
 * started has no saved arguments (its sys_enter ran before we attached): its socket is
 * tracked all the same, without the peer address; the 4-tuple comes with the first read
 * (tcp_rcv_space_adjust below), or from /proc in userspace for a server that writes first. */
static __always_inline int accept_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_sockcall call = {};
    struct guardian_sockcall *s = active_sockcall.lookup(&id);
    if (s) {
        call = *s;
        active_sockcall.delete(&id);
    } else if (!traced_tgid(id >> 32)) {
        return 0;
    }
    if (ret < 0)
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = (__u32)ret};
    struct guardian_conn *c = new_conn(&key, ROLE_SERVER, TRANSPORT_TCP);
    if (!c)
        return 0;
    if (!call.addr) { /* the sys_enter was not seen (or no address asked for) */
        sock_identify(key.fd, c);
        return 0;
    }
    read_sockaddr((const void *)call.addr, &c->t, 1);
    struct guardian_remote r = {};
    __builtin_memcpy(r.raddr, c->t.raddr, 16);
    r.rport = c->t.rport;
    struct guardian_tuple *t = accept_tuple.lookup(&r);
    if (t) {
        c->t = *t;
        c->flags |= CONN_TUPLE_KNOWN;
        accept_tuple.delete(&r);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{ return sockcall_enter(args->fd, (__u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{ return sockcall_enter(args->fd, (__u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = args->fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    /* encrypted: userspace may hold its handshake though the plaintext's protocol is unknown */
    if (c->proto != PROTO_UNKNOWN || (c->flags & CONN_ENCRYPTED)) {
        pair_release(c->conn_id); /* a request never answered goes before the close */
        emit_close(&key, c);
    }
    conns.delete(&key);
    return 0;
}

/* The tracepoint's args struct is declared by TRACEPOINT_PROBE itself, hence a macro. */
#define TUPLE_FROM_STATE(t, args)                                   \
    do {                                                            \
        (t)->family = (args)->family;                               \
        (t)->lport = (args)->sport;                                 \
        (t)->rport = (args)->dport;                                 \
        if ((args)->family == GUARDIAN_AF_INET) {                   \
            (t)->laddr[10] = 0xff;                                  \
            (t)->laddr[11] = 0xff;                                  \
            (t)->raddr[10] = 0xff;                                  \
            (t)->raddr[11] = 0xff;                                  \
            __builtin_memcpy((t)->laddr + 12, (args)->saddr, 4);    \
            __builtin_memcpy((t)->raddr + 12, (args)->daddr, 4);    \
        } else {                                                    \
            __builtin_memcpy((t)->laddr, (args)->saddr_v6, 16);     \
            __builtin_memcpy((t)->raddr, (args)->daddr_v6, 16);     \
        }                                                           \
    } while (0)

/* TCP state changes carry the 4-tuple. Outgoing: CLOSE -> SYN_SENT runs inside connect()
 * (we note which fd the socket is), SYN_SENT -> ESTABLISHED has the local port. Incoming:
 * SYN_RECV -> ESTABLISHED (softirq) is keyed by remote address for accept(). */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != 6)
        return 0; /* IPPROTO_TCP */
    __u64 sk = (__u64)args->skaddr;
    struct guardian_tuple t = {};
    if (args->oldstate == 7 && args->newstate == 2) { /* TCP_CLOSE -> TCP_SYN_SENT */
        __u64 id = bpf_get_current_pid_tgid();
        struct guardian_sockcall *call = active_sockcall.lookup(&id);
        if (!call || !traced_tgid(id >> 32))
            return 0;
        struct guardian_conn_key key = {.tgid = id >> 32, .fd = call->fd};
        connecting.update(&sk, &key);
    } else if (args->oldstate == 2 && args->newstate == 1) { /* SYN_SENT -> ESTABLISHED */
        struct guardian_conn_key *k = connecting.lookup(&sk);
        if (!k)
            return 0;
        struct guardian_conn_key key = *k;
        connecting.delete(&sk);
        TUPLE_FROM_STATE(&t, args);
        struct guardian_conn *c = conns.lookup(&key);
        if (c && c->role == ROLE_CLIENT) { /* connect() already returned */
            c->t = t;
            c->flags |= CONN_TUPLE_KNOWN;
        } else {
            connect_tuple.update(&key, &t);
        }
    } else if (args->oldstate == 3 && args->newstate == 1) { /* TCP_SYN_RECV -> ESTABLISHED */
        TUPLE_FROM_STATE(&t, args);
        struct guardian_remote r = {};
        __builtin_memcpy(r.raddr, t.raddr, 16);
        r.rport = t.rport;
        accept_tuple.update(&r, &t);
    }
    return 0;
}

/* Without BTF offsets (sock_from_fd): TCP data copied to a reader, in the reader's process
 * context (this tracepoint has the same address fields as inet_sock_set_state): the 4-tuple
 * of a tracked socket whose tuple is still unknown, as after an accept() whose arguments
 * were not seen. Runs inside the read, before its exit tracepoint sends the bytes.
 * Elsewhere: one missed hash lookup per TCP read on the host. */
#ifndef OFF_TASK_FILES
TRACEPOINT_PROBE(tcp, tcp_rcv_space_adjust)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_io *io = active_io.lookup(&id);
    if (!io || !io->live)
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = io->fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c || (c->flags & CONN_TUPLE_KNOWN))
        return 0;
    TUPLE_FROM_STATE(&c->t, args);
    c->flags |= CONN_TUPLE_KNOWN;
    return 0;
}
#endif

/* ======== TLS plaintext ================================================================
 * Uprobes where the plaintext exists: OpenSSL/BoringSSL SSL_write and SSL_read (+ _ex; entry and
 * return: C code, uretprobes are safe there) or, where OpenSSL's wrappers hand over to one internal
 * function per direction, that function instead (the read_ex program: it takes a size_t * of bytes
 * done; the write goes up at its entry, write_at_entry), and Go crypto/tls (*Conn).Write entry and (*Conn).Read
 * entry + a plain uprobe at its copy into the caller's buffer or, failing that, at each RET
 * (never uretprobes on Go: moving stacks crash them).
 * Cost: a uprobe hit is a trap; on an instruction the kernel cannot emulate (most of them;
 * it emulates jumps, calls, nops and pushes) it is two, the second a single-step, a debug trap
 * that costs tens of times more in a VM; a uretprobe's return goes through a trampoline
 * (`python -m bench.uprobe_cost` measures each on this kernel, `python -m bench.kernel_time --tls`
 * the hits and run time per request). So probes sit on emulated instructions where the code
 * allows (capture/tls/elf.py): Go's prologue jumps and calls, OpenSSL's internal functions'
 * first push.
 * capture/tls/ finds the symbols and attaches these programs, once per library file.
 * Plaintext goes through emit_data() like syscall bytes, so the protocol detectors run on
 * it; the socket's ciphertext is marked CONN_ENCRYPTED and skipped by the syscall path.
 * SSL* -> socket: the first data syscall on an encrypted socket made by the same thread while
 * that SSL* waits for a socket (inside SSL_read/SSL_write for fd BIOs; right after the SSL
 * call for memory BIOs, as asyncio and node do: handshake output is sent next, same thread). */
#include <uapi/linux/ptrace.h>
#include "tls.h"

#define TLS_MAX_RECORDS 4 /* records per plaintext chunk: 16 KiB, a TLS record, at MAX_PAYLOAD 4096 */

/* LRU: a call whose return probe never runs (thread killed, longjmp) must not pin a slot.
 * A thread's entry stays and is rewritten in place at each call (ssl 0: no call in flight), as
 * active_io's: an update and a delete per SSL call cost more than the probes' other work. */
BPF_TABLE("lru_hash", __u64, struct tls_call, tls_calls, MAX_INFLIGHT);    /* by thread */
BPF_TABLE("lru_hash", struct tls_ssl_key, struct tls_ssl, tls_ssl_fd, MAX_CONNS); /* SSL* -> fd */
BPF_TABLE("lru_hash", __u64, __u64, tls_pending, MAX_INFLIGHT); /* thread -> SSL* without socket */
BPF_TABLE("lru_hash", struct tls_go_key, struct tls_go_read, tls_go_reads, MAX_INFLIGHT);
/* Set (to 1) by the first SSL entry probe: until then no thread is in an SSL call or has an
 * SSL* pending, and the syscall path skips the lookup that would find out */
BPF_ARRAY(tls_used, __u32, 1);
/* pids that just exec'd: userspace looks for statically linked TLS in the new image */
BPF_RINGBUF_OUTPUT(tls_execs, 16);

/* Called by io_exit for every data syscall on a tracked socket, and by io_enter for those of a
 * socket whose plaintext the probes deliver (`tls_socket`: the SSL probes have run, so no need to
 * look). On such a socket this is the syscall's only work, and inside an SSL call whose SSL* its
 * entry found tied to this very socket it is one lookup (the thread's tls_calls entry). */
static __always_inline int tls_socket_io(struct guardian_conn_key *key, struct guardian_conn *c,
                                         __u64 id, __u8 dir, int tls_socket)
{
    __u32 zero = 0;
    if (!tls_socket) {
        __u32 *used = tls_used.lookup(&zero);
        if (!used || !*used)
            return 0;
    }
    /* a thread without an entry has made no SSL call: none in flight, no SSL* pending */
    struct tls_call *call = tls_calls.lookup(&id);
    if (!call)
        return 0;
    __u32 fd = key->fd;
    if (call->ssl && call->fd == fd + 1 && !call->pending && (c->flags & CONN_ENCRYPTED))
        return tls_io_next(call, dir);
    /* a write has no return probe: once tied, it is in flight on its own socket only (the
     * thread goes on to other sockets after it returned); one not tied yet is tied by the
     * thread's next send on an encrypted socket whose plaintext has not started (with an fd
     * BIO its own, inside the call), never by a read or by a plaintext socket's syscall */
    __u64 in_call = call->ssl;
    if (call->noret && (call->fd ? call->fd != fd + 1
                                 : dir != DIR_EGRESS || !(c->flags & CONN_ENCRYPTED) ||
                                       (c->proto != PROTO_TLS_HANDSHAKE && c->proto != PROTO_UNKNOWN)))
        in_call = 0;
    struct tls_ssl_key sk = {.tgid = key->tgid};
    /* inside SSL_read/SSL_write (fd or custom BIO) the syscall is that SSL's own transport:
     * always (re)bind, which also mends a stale entry of a reused SSL*. This also catches
     * protocols that start in plaintext and upgrade (PostgreSQL's SSLRequest, STARTTLS),
     * whose ciphertext the detector never saw first. */
    if (in_call) {
        sk.ssl = call->ssl;
        c->flags |= CONN_ENCRYPTED;
    } else if (call->pending && (c->flags & CONN_ENCRYPTED) && dir == DIR_EGRESS &&
               (c->proto == PROTO_TLS_HANDSHAKE || c->proto == PROTO_UNKNOWN)) {
        /* memory BIO: the SSL's output goes out next on this thread. Only by a send, and only
         * to a socket whose plaintext has not started (in its handshake, or older than the
         * capture): a thread serving many connections (grpc's) receives on others in between,
         * and a handshake step that sends nothing (a server's last) leaves its SSL* pending */
        __u64 *pending = tls_pending.lookup(&id);
        if (!pending) { /* the LRU took it */
            call->pending = 0;
            return 0;
        }
        sk.ssl = *pending;
    } else {
        return 0;
    }
    if (!in_call || call->fd != fd + 1) {
        struct tls_ssl *old = tls_ssl_fd.lookup(&sk);
        if (!old || old->fd != fd) {
            struct tls_ssl st = {.fd = fd};
            tls_ssl_fd.update(&sk, &st);
            stat_add(STAT_TLS_BOUND, 1);
        }
        if (in_call)
            call->fd = fd + 1;
    }
    if (call->pending) {
        tls_pending.delete(&id);
        call->pending = 0;
    }
    return in_call ? tls_io_next(call, dir) : TLS_IO_NONE;
}

/* A send on the socket of the thread's SSL write failed (EAGAIN: WANT_WRITE; an error): the
 * write went up at its entry and the application calls it again with the same bytes, which
 * must not go up twice. */
static __always_inline void tls_write_failed(__u64 id)
{
    struct tls_call *call = tls_calls.lookup(&id);
    if (!call || !call->ssl || call->noret != TLS_NORET_SENT) /* an unsent one is tried again */
        return;
    struct tls_ssl_key sk = {.tgid = id >> 32, .ssl = call->ssl};
    struct tls_ssl *st = tls_ssl_fd.lookup(&sk);
    if (st)
        st->wfailed = 1;
}

static __always_inline void tls_emit(__u32 tgid, __u32 fd, __u8 dir, __u64 buf, __u32 len,
                                     __u8 source, __u64 ts)
{
    if (!capture_armed())
        return;
    struct guardian_conn_key key = {.tgid = tgid, .fd = fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c) { /* not a socket we track (userspace seeds the older ones): a stale SSL* -> fd */
        stat_add(STAT_TLS_NO_FD, 1);
        return;
    }
    if (c->flags & CONN_IGNORED)
        return;
    sock_identify(fd, c);
    /* from now on the socket's own bytes are ciphertext, its plaintext comes from here */
    c->flags |= CONN_ENCRYPTED | CONN_TLS_PLAINTEXT;
    if (c->proto == PROTO_TLS_HANDSHAKE) { /* handshake done: detect the plaintext's protocol */
        c->proto = PROTO_UNKNOWN;
        c->attempts = 0;
    }
    stat_add(STAT_TLS_PLAINTEXT, 1);
    /* plaintext bigger than a record goes up as consecutive records, so frames anywhere in it
     * reach the parser (grpc's TSI batches the frames of many streams into one SSL_write of
     * up to 16 KiB, and SSL_read returns up to a TLS record); the last one carries what is
     * left as uncopied length. A first record that matched no protocol ends it (the rest is
     * no message start). */
#pragma unroll
    for (int i = 0; i < TLS_MAX_RECORDS; i++) {
        __u32 off = i * MAX_PAYLOAD;
        if (off >= len)
            break;
        __u32 n = (i == TLS_MAX_RECORDS - 1 || len - off <= MAX_PAYLOAD) ? len - off : MAX_PAYLOAD;
        emit_data(&key, c, dir, (const void *)(buf + off), n, source, 0, ts);
        if (c->proto == PROTO_UNKNOWN || (c->flags & CONN_IGNORED)) {
            if (off + n < len && !(c->flags & CONN_IGNORED))
                c->bytes[dir & 1] += len - off - n;
            break;
        }
    }
}

/* A write's plaintext goes up at its entry, where buffer and length are (no return probe: its
 * trampoline would cost a second kernel entry per call; `python -m bench.uprobe_cost`), unless
 * it is the same write again: the application calls a failed write (a send on its socket failed
 * meanwhile: tls_write_failed) again with the same buffer and length, and a partial write's rest
 * ends where it did. Such a call's bytes went up at the first; it is counted, not sent. */
static __always_inline void ssl_write_up(__u32 tgid, struct tls_ssl *st, __u64 buf, __u64 num,
                                         __u8 source, __u64 ts)
{
    if (num == 0)
        return;
    __u32 len = num > 0xffffffff ? 0xffffffff : (__u32)num;
    __u64 end = st->wbuf + st->wlen;
    if (st->wlen && buf + len == end && buf >= st->wbuf && (buf > st->wbuf || st->wfailed)) {
        st->wfailed = 0;
        stat_add(STAT_TLS_WRITE_AGAIN, 1);
        return;
    }
    st->wbuf = buf;
    st->wlen = len;
    st->wfailed = 0;
    tls_emit(tgid, st->fd, DIR_EGRESS, buf, len, source, ts);
}

static __always_inline int ssl_enter(struct pt_regs *ctx, __u8 dir, __u8 source, __u64 out_len,
                                     __u64 num, int handshake, int at_entry)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    if (!traced_tgid(tgid))
        return 0;
    __u64 ssl = PT_REGS_PARM1(ctx);
    __u32 zero = 0;
    __u32 *used = tls_used.lookup(&zero);
    if (used && !*used) /* written once: a store at every call would bounce its cache line */
        *used = 1;
    struct tls_call *p = tls_calls.lookup(&id);
    if (p && p->ssl && p->noret == TLS_NORET_UNSENT) /* its socket never sent application data */
        stat_add(STAT_TLS_NO_FD, 1);
    struct tls_ssl_key sk = {.tgid = tgid, .ssl = ssl};
    struct tls_ssl *bound = tls_ssl_fd.lookup(&sk);
    __u8 pending = p ? p->pending : 0;
    /* a handshake starts a (maybe new) session on a reused SSL*: tie it afresh */
    if ((handshake || !bound) && tls_pending.update(&id, &ssl) == 0)
        pending = 1;
    if (handshake) { /* no call in flight: the thread's entry only says an SSL* is pending */
        if (p) {
            p->ssl = 0;
            p->noret = TLS_NORET_NONE;
            p->pending = pending;
        } else {
            struct tls_call none = {.pending = pending};
            tls_calls.update(&id, &none);
        }
        return 0;
    }
    /* the socket the SSL* is tied to now: the syscalls of the call check it without a lookup,
     * and the return probe takes it from here */
    struct tls_call call = {.ssl = ssl, .buf = PT_REGS_PARM2(ctx), .out_len = out_len,
                            .dir = dir, .source = source, .pending = pending,
                            .fd = bound ? bound->fd + 1 : 0};
    if (dir == DIR_EGRESS && !at_entry) {
        call.ts_ns = bpf_ktime_get_ns(); /* the wrappers' writes go up at their return */
    } else if (dir == DIR_EGRESS) {
        call.out_len = num;
        /* an SSL* with no socket yet (no handshake seen: curl's SSL_connect does not go through
         * SSL_do_handshake; a session older than the capture) is tied by the write's own send,
         * and its plaintext goes up then, stamped here (tls_socket_io, guardian_tls_flush).
         * One still pending after a handshake step is tied all the same: every session sent a
         * flight of its handshake before it can write (that tied it), and a server's last step
         * sends nothing (asyncio: its SSL* stays pending through the first request) */
        if (bound) {
            ssl_write_up(tgid, bound, call.buf, num, source, 0);
            call.noret = TLS_NORET_SENT;
        } else {
            call.noret = TLS_NORET_UNSENT;
            call.fd = 0;
            call.ts_ns = bpf_ktime_get_ns();
        }
    }
    if (p)
        *p = call;
    else
        tls_calls.update(&id, &call);
    return 0;
}

/* Tail-called by io_exit (tls_tail) after the first application data of a write that was not
 * tied to its socket at its entry went out on the socket it is tied to now. */
int guardian_tls_flush(void *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct tls_call *p = tls_calls.lookup(&id);
    if (!p || !p->ssl || p->noret != TLS_NORET_UNSENT)
        return 0;
    p->noret = TLS_NORET_SENT;
    struct tls_ssl_key sk = {.tgid = id >> 32, .ssl = p->ssl};
    struct tls_ssl *st = tls_ssl_fd.lookup(&sk);
    if (!st) {
        stat_add(STAT_TLS_NO_FD, 1);
        return 0;
    }
    ssl_write_up(id >> 32, st, p->buf, p->out_len, p->source, p->ts_ns);
    return 0;
}

int tls_ssl_return(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct tls_call *p = tls_calls.lookup(&id);
    if (!p || !p->ssl || p->noret) /* writes go up at their entry */
        return 0;
    struct tls_call call = *p;
    p->ssl = 0;
    int ret = (int)PT_REGS_RC(ctx); /* C int: -1 arrives as 0xffffffff in RAX */
    if (ret <= 0)
        return 0;
    __u64 n = (__u64)ret;
    if (call.out_len) { /* _ex variants and the internal functions store the byte count */
        if (bpf_probe_read_user(&n, sizeof(n), (void *)call.out_len) != 0)
            return 0;
    }
    __u32 fd = call.fd - 1; /* tied at the entry, or by a syscall of the call (tls_socket_io) */
    if (!call.fd) { /* a memory BIO's SSL* is tied after its call: maybe meanwhile */
        struct tls_ssl_key sk = {.tgid = id >> 32, .ssl = call.ssl};
        struct tls_ssl *bound = tls_ssl_fd.lookup(&sk);
        if (!bound) {
            stat_add(STAT_TLS_NO_FD, 1);
            return 0;
        }
        fd = bound->fd;
    }
    /* plaintext written: stamped at SSL_write's entry (an fd BIO sends inside the call) */
    tls_emit(id >> 32, fd, call.dir, call.buf, (__u32)n, call.source,
             call.dir == DIR_EGRESS ? call.ts_ns : 0);
    return 0;
}

/* One set of entry programs per library kind: the source id is in the program. */
#define SSL_INT_LEN(ctx) ((__s32)PT_REGS_PARM3(ctx) > 0 ? (__u64)(__s32)PT_REGS_PARM3(ctx) : 0)
/* The wrappers' writes keep their return probe (node's and grpc's memory BIOs call SSL_write
 * before their handshake is done: it fails with nothing on a socket to tell); OpenSSL's internal
 * write function (`write_at_entry`: the system library's fd-BIO users) goes up at its entry. */
#define SSL_PROBES(lib, src)                                                                   \
    int tls_##lib##_write(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_EGRESS, src, 0, 0, 0, 0); } \
    int tls_##lib##_read(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_INGRESS, src, 0, 0, 0, 0); } \
    int tls_##lib##_write_ex(struct pt_regs *ctx)                                             \
    { return ssl_enter(ctx, DIR_EGRESS, src, PT_REGS_PARM4(ctx), 0, 0, 0); }                  \
    int tls_##lib##_write_ex2(struct pt_regs *ctx)                                            \
    { return ssl_enter(ctx, DIR_EGRESS, src, PT_REGS_PARM5(ctx), 0, 0, 0); }                  \
    int tls_##lib##_write_at_entry(struct pt_regs *ctx)                                       \
    { return ssl_enter(ctx, DIR_EGRESS, src, 0, PT_REGS_PARM3(ctx), 0, 1); }                  \
    int tls_##lib##_read_ex(struct pt_regs *ctx)                                              \
    { return ssl_enter(ctx, DIR_INGRESS, src, PT_REGS_PARM4(ctx), 0, 0, 0); }                 \
    int tls_##lib##_handshake(struct pt_regs *ctx) { return ssl_enter(ctx, 0, src, 0, 0, 1, 0); }
SSL_PROBES(openssl, SRC_OPENSSL)
SSL_PROBES(boringssl, SRC_BORINGSSL)
SSL_PROBES(node, SRC_NODE)

/* Go crypto/tls.(*Conn).Write(b []byte): receiver RAX, b.ptr RBX, b.len RCX. */
int tls_go_write(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!traced_tgid(id >> 32))
        return 0;
    __u32 fd;
    if (go_conn_fd(GO_ARG1(ctx), &fd) != 0) {
        stat_add(STAT_TLS_READ_FAULT, 1);
        return 0;
    }
    __u64 len = GO_ARG3(ctx);
    tls_emit(id >> 32, fd, DIR_EGRESS, GO_ARG2(ctx), len > 0xffffffff ? 0xffffffff : (__u32)len,
             SRC_GOTLS, 0); /* at Write's entry already */
    return 0;
}

/* (*Conn).Read(b []byte) entry: remember the buffer by goroutine until a RET probe. */
int tls_go_read(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!traced_tgid(id >> 32))
        return 0;
    struct tls_go_read r = {.buf = GO_ARG2(ctx)};
    if (go_conn_fd(GO_ARG1(ctx), &r.fd) != 0) {
        stat_add(STAT_TLS_READ_FAULT, 1);
        return 0;
    }
    struct tls_go_key k = {.tgid = id >> 32, .goid = GO_G(ctx)};
    tls_go_reads.update(&k, &r);
    return 0;
}

/* A RET instruction of (*Conn).Read: n is in RAX. */
int tls_go_read_ret(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct tls_go_key k = {.tgid = id >> 32, .goid = GO_G(ctx)};
    struct tls_go_read *p = tls_go_reads.lookup(&k);
    if (!p)
        return 0;
    struct tls_go_read r = *p;
    tls_go_reads.delete(&k);
    __s64 n = (__s64)GO_RET1(ctx);
    if (n <= 0)
        return 0;
    tls_emit(id >> 32, r.fd, DIR_INGRESS, r.buf, (__u32)n, SRC_GOTLS, 0);
    return 0;
}

/* The call to runtime.memmove inside (*Conn).Read (its inlined bytes.Reader.Read): memmove(dst
 * RAX, src RBX, n RCX) copies the plaintext into the caller's buffer; n is what Read returns.
 * The destination must be the buffer this goroutine's Read was given: any other copy that a
 * Go release adds to Read is not plaintext for the caller and is left alone. */
int tls_go_read_copy(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct tls_go_key k = {.tgid = id >> 32, .goid = GO_G(ctx)};
    struct tls_go_read *p = tls_go_reads.lookup(&k);
    if (!p || p->buf != GO_ARG1(ctx))
        return 0;
    struct tls_go_read r = *p;
    tls_go_reads.delete(&k);
    __u64 n = GO_ARG3(ctx);
    if (n == 0)
        return 0;
    tls_emit(id >> 32, r.fd, DIR_INGRESS, GO_ARG2(ctx), n > 0xffffffff ? 0xffffffff : (__u32)n, SRC_GOTLS, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct tls_exec e = {.ts_ns = bpf_ktime_get_ns(), .pid = args->pid};
    if (!traced_tgid(e.pid))
        return 0;
    tls_execs.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
/* ======== end of TLS section ============================================================ */

/* ======== sendmmsg / recvmmsg (DNS) =================================================
 * glibc's resolver sends the A and AAAA queries of getaddrinfo() in one sendmmsg(), and
 * servers batch datagrams with recvmmsg(). Each message goes through emit_data() with its
 * own peer address; we walk the first MAX_MMSG messages and the first iovec of each (one
 * buffer per datagram is what resolvers use), accounting the rest so positions stay right. */
#define MAX_MMSG 4

struct guardian_mmsghdr { /* struct mmsghdr: struct user_msghdr + msg_len */
    __u64 name;
    __u32 namelen;
    __u32 _pad0;
    __u64 iov;
    __u64 iovlen;
    __u64 control;
    __u64 controllen;
    __u32 flags;
    __u32 _pad1;
    __u32 msg_len; /* bytes sent / received for this message, set by the kernel */
    __u32 _pad2;
};

struct guardian_mmsg_call {
    __u64 vec; /* user struct mmsghdr array */
    __u32 fd;
    __u32 vlen;
    __u8 direction;
    __u8 _pad[7];
    __u64 ts_ns; /* at entry: the stamp of datagrams sent (see io_exit) */
};
BPF_HASH(active_mmsg, __u64, struct guardian_mmsg_call, MAX_INFLIGHT); /* by thread, enter -> exit */

static __always_inline int mmsg_enter(__u32 fd, __u64 vec, __u32 vlen, __u8 dir)
{
    __u64 id = bpf_get_current_pid_tgid();
    /* batched datagram calls are used on UDP sockets */
    if (!followed_conn(id, fd, TRANSPORT_UDP))
        return 0;
    struct guardian_mmsg_call m = {.vec = vec, .fd = fd, .vlen = vlen, .direction = dir,
                                   .ts_ns = bpf_ktime_get_ns()};
    if (active_mmsg.update(&id, &m) != 0)
        stat_add(STAT_IO_MAP_FULL, 1);
    return 0;
}

static __always_inline int mmsg_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct guardian_mmsg_call *p = active_mmsg.lookup(&id);
    if (!p)
        return 0;
    struct guardian_mmsg_call m = *p;
    active_mmsg.delete(&id);
    if (ret <= 0) /* ret: number of messages */
        return 0;
    struct guardian_conn_key key = {.tgid = id >> 32, .fd = m.fd};
    struct guardian_conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    sock_identify(m.fd, c);
#pragma unroll
    for (int i = 0; i < MAX_MMSG; i++) {
        if (i >= ret || i >= m.vlen)
            break;
        struct guardian_mmsghdr h = {};
        if (bpf_probe_read_user(&h, sizeof(h), (void *)(m.vec + i * sizeof(h))) != 0)
            break;
        if (h.iovlen == 0 || h.msg_len == 0)
            continue;
        struct guardian_iovec v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)h.iov) != 0)
            break;
        __u32 n = v.len < h.msg_len ? (__u32)v.len : h.msg_len;
        emit_data(&key, c, m.direction, (const void *)v.base, n, SRC_SYSCALL, (const void *)h.name,
                  m.direction == DIR_EGRESS ? m.ts_ns : 0);
        if (c->flags & (CONN_IGNORED | CONN_ENCRYPTED))
            break;
        if (h.msg_len > n)
            c->bytes[m.direction & 1] += h.msg_len - n;
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{ return mmsg_enter(args->fd, (__u64)args->mmsg, args->vlen, DIR_EGRESS); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return mmsg_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{ return mmsg_enter(args->fd, (__u64)args->mmsg, args->vlen, DIR_INGRESS); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return mmsg_exit(args->ret); }
