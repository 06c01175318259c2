/* MongoDB wire protocol detection (mongodb.com/docs/manual/reference/mongodb-wire-protocol).
 * Header, little-endian int32s: messageLength, requestID, responseTo, opCode. We require a
 * sane length and a known opCode, then per opCode: OP_MSG (2013) flag bits only from the
 * defined set and a section kind 0/1 (kind 0: a BSON length that fits); OP_QUERY (2004) a
 * request with small flags and a printable collection name; OP_REPLY (1) a response with
 * small flags; OP_COMPRESSED (2012) a known original opCode and compressor. A request has
 * responseTo == 0. Mirror: capture/protocols/mongodb.py (detect). */
#ifndef GUARDIAN_PROTO_MONGODB_H
#define GUARDIAN_PROTO_MONGODB_H

static __always_inline __u32 mongo_u32(const __u8 *b)
{
    return (__u32)b[0] | ((__u32)b[1] << 8) | ((__u32)b[2] << 16) | ((__u32)b[3] << 24);
}

static __always_inline int detect_mongodb(const __u8 *b, __u32 len)
{
    if (len < 21)
        return MSG_NONE;
    __u32 length = mongo_u32(b), response_to = mongo_u32(b + 8), op = mongo_u32(b + 12);
    if (length < 21 || length > 48000000)
        return MSG_NONE;
    int dir = response_to == 0 ? MSG_REQUEST : MSG_RESPONSE;
    if (op == 2013) { /* OP_MSG: checksumPresent(0), moreToCome(1), exhaustAllowed(16) */
        if ((mongo_u32(b + 16) & ~0x10003u) || b[20] > 1)
            return MSG_NONE;
        if (b[20] == 0 && len >= 25) {
            __u32 doc = mongo_u32(b + 21);
            if (doc < 5 || doc > length - 21)
                return MSG_NONE;
        }
        return dir;
    }
    if (op == 2004) { /* OP_QUERY */
        __u32 flags = mongo_u32(b + 16);
        if (response_to != 0 || length < 29 || flags >= 256 || (flags & 1) || b[20] < 0x20 || b[20] >= 0x7f)
            return MSG_NONE;
        return MSG_REQUEST;
    }
    if (op == 1) /* OP_REPLY */
        return (response_to != 0 && length >= 36 && mongo_u32(b + 16) < 16) ? MSG_RESPONSE : MSG_NONE;
    if (op == 2012 && len >= 25) { /* OP_COMPRESSED */
        __u32 orig = mongo_u32(b + 16);
        if ((orig == 2013 || orig == 2004 || orig == 1) && b[24] <= 3)
            return dir;
    }
    return MSG_NONE;
}

#endif
