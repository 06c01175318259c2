/* Reading user-space socket addresses into a guardian_tuple (pure: no maps). */
#ifndef GUARDIAN_SOCKADDR_H
#define GUARDIAN_SOCKADDR_H

#include "types.h"

#define GUARDIAN_AF_INET 2
#define GUARDIAN_AF_INET6 10

/* Read a user sockaddr_in/in6 into the local or remote half of a tuple. */
static __always_inline void read_sockaddr(const void *uaddr, struct guardian_tuple *t, int remote)
{
    __u16 family = 0;
    if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr) != 0)
        return;
    __u16 port_be = 0;
    bpf_probe_read_user(&port_be, sizeof(port_be), (const __u8 *)uaddr + 2);
    __u16 port = (port_be >> 8) | (port_be << 8);
    __u8 *addr = remote ? t->raddr : t->laddr;
    if (family == GUARDIAN_AF_INET) {
        __builtin_memset(addr, 0, 10);
        addr[10] = 0xff;
        addr[11] = 0xff;
        bpf_probe_read_user(addr + 12, 4, (const __u8 *)uaddr + 4);
    } else if (family == GUARDIAN_AF_INET6) {
        bpf_probe_read_user(addr, 16, (const __u8 *)uaddr + 8);
    } else {
        return;
    }
    if (remote)
        t->rport = port;
    else
        t->lport = port;
    t->family = family;
}

#endif
