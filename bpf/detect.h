/* Protocol detection from the first bytes of a message. Each detector lives in
 * protocols/<name>.h as `int detect_<name>(const __u8 *buf, __u32 len)` returning a
 * guardian_msg_type; `buf` holds the first min(len, MAX_PAYLOAD) bytes of the message.
 * Adding a protocol: its header, its id in types.h, one line below. */
#ifndef GUARDIAN_DETECT_H
#define GUARDIAN_DETECT_H

#include "types.h"
#include "protocols/tls.h"
#include "protocols/http1.h"
#include "protocols/http2.h"
#include "protocols/postgres.h"
#include "protocols/mysql.h"
#include "protocols/nats.h"
#include "protocols/memcached.h"
#include "protocols/redis.h"
#include "protocols/mongodb.h"
#include "protocols/kafka.h"
#include "protocols/cassandra.h"
#include "protocols/amqp.h"
#include "protocols/dns.h"
#include "protocols/tls_handshake.h"

/* Each detector gets its own copy of `len`, read back from the (unused) tail of the payload
 * buffer: the verifier cannot tie it to the caller's register, so the bounds a detector
 * learns about it do not split the states every later detector is verified in. Without
 * this, verification time grows with the product of the detectors' length checks. */
static __always_inline __u32 detect_len(const __u8 *buf, __u32 len)
{
    volatile __u32 *slot = (volatile __u32 *)(buf + 2 * MAX_PAYLOAD - 4);
    *slot = len;
    return *slot;
}

/* REGISTRY:protocols — tried in order, most specific structure first. Of these only DNS runs
 * over UDP: a datagram is tried as DNS alone (a query for a name with a long first label also
 * passes the Kafka request check). */
static __always_inline int detect_protocol(const __u8 *buf, __u32 len, __u8 *msg_type, int udp)
{
    int t;
#define TRY(id, fn)            \
    t = fn(buf, detect_len(buf, len)); \
    if (t != MSG_NONE) {       \
        *msg_type = t;         \
        return id;             \
    }
    if (udp) {
        TRY(PROTO_DNS, detect_dns)
        return PROTO_UNKNOWN;
    }
    TRY(PROTO_TLS_HANDSHAKE, detect_tls_handshake)
    TRY(PROTO_HTTP1, detect_http1)
    TRY(PROTO_HTTP2, detect_http2)
    TRY(PROTO_POSTGRES, detect_postgres)
    TRY(PROTO_MYSQL, detect_mysql)
    TRY(PROTO_NATS, detect_nats)
    TRY(PROTO_MEMCACHED, detect_memcached)
    TRY(PROTO_REDIS, detect_redis)
    TRY(PROTO_MONGODB, detect_mongodb)
    TRY(PROTO_KAFKA, detect_kafka)
    TRY(PROTO_CASSANDRA, detect_cassandra)
    TRY(PROTO_AMQP, detect_amqp)
    TRY(PROTO_DNS, detect_dns)
#undef TRY
    return PROTO_UNKNOWN;
}

#endif
