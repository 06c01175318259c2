/* DNS detection (RFC 1035 §4.1.1). UDP: the message is the datagram; TCP: a 2-byte length
 * precedes it (§4.2.2). Header: id(2) flags(2) qdcount(2) ancount(2) nscount(2) arcount(2),
 * then the question's first label length. We require a known opcode, Z = 0, one question,
 * rcode <= 10, a first label of at most 63 bytes, and for queries no answers.
 * Mirror: capture/protocols/dns.py (_header_ok). */
#ifndef GUARDIAN_PROTO_DNS_H
#define GUARDIAN_PROTO_DNS_H

static __always_inline int dns_header(const __u8 *b, __u32 len, __u32 off)
{
    if (len < off + 17)
        return MSG_NONE;
    __u8 f0 = b[off + 2], f1 = b[off + 3];
    __u8 opcode = (f0 >> 3) & 0xf, rcode = f1 & 0xf;
    if (opcode != 0 && opcode != 1 && opcode != 2 && opcode != 4 && opcode != 5)
        return MSG_NONE;
    if ((f1 & 0x40) || rcode > 10) /* Z bit */
        return MSG_NONE;
    if (b[off + 4] != 0 || b[off + 5] != 1) /* qdcount == 1 */
        return MSG_NONE;
    if (b[off + 12] > 63) /* first label length */
        return MSG_NONE;
    if (f0 & 0x80)
        return MSG_RESPONSE;
    /* a query: ancount 0, nscount <= 1, arcount <= 4 (EDNS OPT, TSIG, cookie), rcode 0 */
    if (b[off + 6] || b[off + 7] || b[off + 8] || b[off + 9] > 1 || b[off + 10] || b[off + 11] > 4 ||
        rcode)
        return MSG_NONE;
    return MSG_REQUEST;
}

static __always_inline int detect_dns(const __u8 *b, __u32 len)
{
    if (len < 17)
        return MSG_NONE;
    /* TCP: a length prefix, then a valid header (checked first: a UDP id rarely makes one) */
    __u32 n = ((__u32)b[0] << 8) | b[1];
    if (n >= 17) {
        int t = dns_header(b, len, 2);
        if (t != MSG_NONE)
            return t;
    }
    return dns_header(b, len, 0);
}

#endif
