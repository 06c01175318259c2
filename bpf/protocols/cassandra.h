/* Cassandra CQL native protocol detection (native_protocol_v1..v5.spec §2). Header: version
 * (0x01-0x05 request, 0x81-0x85 response), flags, stream (1 byte in v1/v2, 2 bytes from v3),
 * opcode, body length (int32). We require a known version, flags within the version's set, an
 * opcode valid for the direction (and CREDENTIALS only in v1/v2), a non-negative request stream
 * and a body length under 16 MiB (native_transport_max_frame_size's default; a first message is
 * small). Mirror: capture/protocols/cassandra.py (_header). */
#ifndef GUARDIAN_PROTO_CASSANDRA_H
#define GUARDIAN_PROTO_CASSANDRA_H

static __always_inline int cql_request_op(__u8 op, __u8 version)
{
    return op == 1 || (op == 4 && version <= 2) || op == 5 || op == 7 || op == 9 || op == 10 ||
           op == 11 || op == 13 || op == 15;
}

static __always_inline int cql_response_op(__u8 op)
{
    return op == 0 || op == 2 || op == 3 || op == 6 || op == 8 || op == 12 || op == 14 || op == 16;
}

static __always_inline int detect_cassandra(const __u8 *b, __u32 len)
{
    if (len < 8)
        return MSG_NONE;
    __u8 version = b[0] & 0x7f, response = b[0] & 0x80;
    if (version < 1 || version > 5 || (version >= 3 && len < 9))
        return MSG_NONE;
    __u8 flags = b[1], op, len_hi;
    if (version <= 2) {
        if (flags > 0x03)
            return MSG_NONE;
        op = b[3];
        len_hi = b[4];
        if (!response && (b[2] & 0x80)) /* negative stream: only server events */
            return MSG_NONE;
    } else {
        if (flags > 0x1f)
            return MSG_NONE;
        op = b[4];
        len_hi = b[5];
        if (!response && (b[2] & 0x80))
            return MSG_NONE;
    }
    if (len_hi != 0) /* body length < 16 MiB (and not negative) */
        return MSG_NONE;
    if (response)
        return cql_response_op(op) ? MSG_RESPONSE : MSG_NONE;
    return cql_request_op(op, version) ? MSG_REQUEST : MSG_NONE;
}

#endif
