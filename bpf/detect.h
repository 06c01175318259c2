/* Protocol detection from the first bytes of a message. Each detector lives in
 * protocols/<name>.h as `int detect_<name>(const __u8 *buf, __u32 len)` returning a
 * guardian_msg_type; `buf` holds the first min(len, MAX_PAYLOAD) bytes of the message.
 * Adding a protocol: its header, its id in types.h, one line below. */
#ifndef GUARDIAN_DETECT_H
#define GUARDIAN_DETECT_H

#include "types.h"
#include "protocols/tls.h"
#include "protocols/http1.h"

/* REGISTRY:protocols — tried in order, most specific structure first. */
static __always_inline int detect_protocol(const __u8 *buf, __u32 len, __u8 *msg_type)
{
    int t;
#define TRY(id, fn)            \
    t = fn(buf, len);          \
    if (t != MSG_NONE) {       \
        *msg_type = t;         \
        return id;             \
    }
    TRY(PROTO_HTTP1, detect_http1)
#undef TRY
    return PROTO_UNKNOWN;
}

#endif
