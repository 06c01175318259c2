/* TLS handshake detection (RFC 8446 §4, §5.1; RFC 5246 §7.4): the first record of a TLS
 * connection, a ClientHello from the client or a ServerHello from the server. Its bytes go
 * to capture/protocols/tls_handshake.py, which reports handshakes that fail (they never have
 * plaintext for the TLS uprobes to see); the rest of the connection stays ciphertext.
 *
 *   record:    type 0x16 | version 0x03 0x01-0x04 | length (2)  42 .. 2^14
 *   handshake: msg_type 1 / 2 | length (3) | legacy_version 0x03 0x01-0x03 | random (32)
 *              | session_id length (1) <= 32 | ...
 */
#ifndef GUARDIAN_PROTO_TLS_HANDSHAKE_H
#define GUARDIAN_PROTO_TLS_HANDSHAKE_H

#define TLS_HELLO_MIN 38 /* version + random + session_id length + at least cipher/method */

static __always_inline int detect_tls_handshake(const __u8 *b, __u32 len)
{
    if (len < 5 || b[0] != 0x16 || b[1] != 3 || b[2] < 1 || b[2] > 4)
        return MSG_NONE;
    __u32 rec_len = ((__u32)b[3] << 8) | b[4];
    /* OpenSSL (no read-ahead) reads a record's header alone, then its body: a connection's
     * first message read that way is the server reading the ClientHello */
    if (len == 5)
        return rec_len >= TLS_HELLO_MIN + 4 && rec_len <= 16384 ? MSG_REQUEST : MSG_NONE;
    if (len < 44)
        return MSG_NONE;
    __u32 hs_len = ((__u32)b[6] << 16) | ((__u32)b[7] << 8) | b[8];
    /* a hello fits in its first record (it is the first message: nothing precedes it) */
    if (rec_len > 16384 || hs_len < TLS_HELLO_MIN || hs_len + 4 > rec_len)
        return MSG_NONE;
    if (b[9] != 3 || b[10] < 1 || b[10] > 3 || b[43] > 32)
        return MSG_NONE;
    if (b[5] == 1)
        return MSG_REQUEST;
    if (b[5] == 2)
        return MSG_RESPONSE;
    return MSG_NONE;
}

#endif
