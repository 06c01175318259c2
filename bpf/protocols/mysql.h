/* MySQL/MariaDB client/server protocol detection (dev.mysql.com/doc/dev/mysql-server/latest/
 * page_protocol_basic_packets.html). Every packet: Int<3> payload length (LE) | Int<1> sequence
 * id | payload. The server speaks first: Handshake v10 (0x0a, then a NUL-terminated version
 * starting with a digit). Joining an open connection, a command (sequence 0) written whole
 * in one syscall, or an ERR packet (0xff, code, '#' SQLSTATE marker). */
#ifndef GUARDIAN_PROTO_MYSQL_H
#define GUARDIAN_PROTO_MYSQL_H

static __always_inline int detect_mysql(const __u8 *b, __u32 len)
{
    if (len < 5)
        return MSG_NONE;
    __u32 plen = (__u32)b[0] | ((__u32)b[1] << 8) | ((__u32)b[2] << 16);
    __u8 seq = b[3], cmd = b[4];
    if (plen == 0)
        return MSG_NONE;
    if (seq == 0 && cmd == 0x0a && plen >= 40 && plen <= 512 && len >= 7 && b[5] >= '1' && b[5] <= '9' &&
        (b[6] == '.' || (b[6] >= '0' && b[6] <= '9')))
        return MSG_RESPONSE; /* Handshake v10, version "5.7…", "8.0…", "10.11…" */
    if (seq == 0 && plen + 4 == len && len < MAX_PAYLOAD) {
        /* COM_QUERY 0x03, COM_STMT_PREPARE 0x16 carry text; 0x17 execute; 0x19 close; 0x0e ping */
        if ((cmd == 0x03 || cmd == 0x16) && plen >= 2)
            return b[5] >= 0x09 ? MSG_REQUEST : MSG_NONE;
        if (cmd == 0x17 && plen >= 10)
            return MSG_REQUEST;
        if ((cmd == 0x0e || cmd == 0x01) && plen == 1)
            return MSG_REQUEST;
    }
    if (seq >= 1 && cmd == 0xff && len >= 13 && plen >= 9 && b[7] == '#')
        return MSG_RESPONSE;
    return MSG_NONE;
}

#endif
