// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0
/*
 * fastlb's XDP filter: only service traffic enters user space.
 *
 * Redirected to the AF_XDP socket of the receiving queue (everything else is XDP_PASS, so
 * ARP, ICMP echo to the director, SSH, VRRP, BGP, ... reach the kernel untouched):
 *
 *   - IPv4/IPv6 TCP/UDP whose destination addr:port, or addr:0 (port-0 services), is in
 *     `services`;
 *   - packets matching a rule of `classifiers` (prefix, protocol, port range): the fwmark
 *     services;
 *   - NAT replies: TCP/UDP whose SOURCE addr:port (or addr:0) is in `reals`;
 *   - ICMP/ICMPv6 errors addressed to a VIP, or quoting a packet from a service or to a
 *     real server;
 *   - IP fragments addressed to a VIP, or from a NAT real server (see below).
 *
 * Fragments: fastlb does not reassemble. Every IPv4 fragment (MF set or offset != 0) and
 * every IPv6 packet whose first next-header is a Fragment header is redirected when its
 * destination is a VIP, so the pipeline follows it (or counts it under `fragment`) instead
 * of the kernel's reassembly queue absorbing it silently. A fragment carries no ports
 * unless it is the first, so a NAT real server's fragmented reply cannot be matched by
 * source addr:port: `reals` also holds each NAT real server's address alone (protocol 0,
 * port 0), and every fragment from such an address is redirected unless it is addressed
 * to the director itself (`locals`); the pipeline sends the kernel those that belong to no
 * connection. Fragments to other addresses pass.
 *
 * IPv6 extension headers other than Fragment are not walked: such packets pass.
 *
 * Standby: while key 0 of `standby` is 1 (this director is the standby of a director pair,
 * see fastlb's docs/decisions.md) every packet that would be redirected is dropped here
 * instead, so neither fastlb nor the kernel's forwarding sends a client's or a real
 * server's packet on; everything else (VRRP adverts, ARP, sync datagrams) passes as ever.
 * Value 2 is a restart's hold (fastlb's src/datapath/xdp/hold.rs): the same drop, while no
 * fastlb runs and the next start is to take the program over.
 *
 * One optional 802.1Q / 802.1ad tag is understood.
 *
 * Only frames for this director are considered at all: a unicast destination MAC must be
 * in `macs` for the receiving interface (its own MAC, and the operator's `accept_macs` such
 * as VRRP virtual MACs). A frame for another host (a switch flooding unknown unicast) is
 * counted and passed: the kernel sees PACKET_OTHERHOST and drops it as it always would.
 * Broadcast and multicast frames go on to the checks below.
 *
 * The XSKMAP is shared by every interface the program is attached to: `iface_slots` maps
 * an ingress ifindex to its first slot, and the socket of queue q sits at slot base + q.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/*
 * ICMP and ICMPv6 share this 8-byte header shape. linux/icmp.h would pull in libc headers
 * that do not exist for the bpf target.
 */
struct icmp_err {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 rest;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

#define MAX_SOCKETS 256
#define MAX_CLASSIFIERS 16
#define FAMILY_V4 4
#define FAMILY_V6 6
/* Marks a VIP (protocol 0, port 0) in `services`: ICMP errors and fragments to it. */
#define PROTO_ANY 0

/* Key of `services` and `reals`. IPv4 addresses sit in addr[0..4], the rest zero. */
struct addr_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* A classifier rule; addr already masked by user space, ports in host order. */
struct classifier {
	__u8 net[16];
	__u8 mask[16];
	__u16 port_lo;
	__u16 port_hi;
	__u8 proto; /* 0 = any */
	__u8 family;
	__u8 valid;
	__u8 pad;
};

enum counter {
	CNT_REDIRECT,
	CNT_PASS,
	CNT_PARSE_PASS,
	CNT_OTHERHOST,
	CNT_STANDBY,
	CNT_MAX,
};

/* Key of `macs`: a unicast MAC the interface `ifindex` takes frames for. */
struct mac_key {
	__u32 ifindex;
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_SOCKETS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} iface_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, __u32);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, __u32);
} reals SEC(".maps");

/*
 * The director's own addresses (port 0, protocol 0): a packet from a real server to one of
 * them is the kernel's (a health check's answer, an SSH session), never a NAT reply.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct addr_key);
	__type(value, __u32);
} locals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CLASSIFIERS);
	__type(key, __u32);
	__type(value, struct classifier);
} classifiers SEC(".maps");

/* Key 0: 1 while this director is a pair's standby (see the top of this file). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} standby SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct mac_key);
	__type(value, __u32);
} macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += 1;
}

static __always_inline int in_map(void *map, struct addr_key *k, __be16 port)
{
	k->port = port;
	if (bpf_map_lookup_elem(map, k))
		return 1;
	k->port = 0;
	return bpf_map_lookup_elem(map, k) != 0;
}

static __always_inline int is_vip(const __u8 *addr, int len, __u8 family)
{
	struct addr_key k = {};
	__builtin_memcpy(k.addr, addr, 16);
	if (len == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	k.family = family;
	k.proto = PROTO_ANY;
	return bpf_map_lookup_elem(&services, &k) != 0;
}

static __always_inline int classify(const __u8 *addr, __u8 family, __u8 proto, __u16 port)
{
	__u32 words[4] = {};
	__builtin_memcpy(words, addr, family == FAMILY_V4 ? 4 : 16);
	for (__u32 i = 0; i < MAX_CLASSIFIERS; i++) {
		__u32 idx = i;
		struct classifier *r = bpf_map_lookup_elem(&classifiers, &idx);
		if (!r || !r->valid)
			break;
		if (r->family != family || (r->proto && r->proto != proto))
			continue;
		if (port < r->port_lo || port > r->port_hi)
			continue;
		__u32 *net = (__u32 *)r->net, *mask = (__u32 *)r->mask;
		if (((words[0] & mask[0]) == net[0]) && ((words[1] & mask[1]) == net[1]) &&
		    ((words[2] & mask[2]) == net[2]) && ((words[3] & mask[3]) == net[3]))
			return 1;
	}
	return 0;
}

/* Decides for a TCP/UDP header at l4 of a packet src -> dst. */
static __always_inline int wanted_l4(void *l4, void *end, const __u8 *src, const __u8 *dst,
				     int alen, __u8 family, __u8 proto)
{
	/* Source and destination ports are the first 4 bytes of both TCP and UDP. */
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return 0;
	struct addr_key k = {};
	k.family = family;
	k.proto = proto;
	__builtin_memcpy(k.addr, dst, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	if (in_map(&services, &k, ports[1]))
		return 1;
	if (classify(dst, family, proto, bpf_ntohs(ports[1])))
		return 1;
	struct addr_key local = {};
	local.family = family;
	__builtin_memcpy(local.addr, k.addr, 16);
	if (bpf_map_lookup_elem(&locals, &local))
		return 0;
	__builtin_memcpy(k.addr, src, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	return in_map(&reals, &k, ports[0]);
}

/*
 * The quoted packet of an ICMP error, from src to dst: wanted if it left a service
 * (src addr:port is a VIP's) or went to a real server (dst addr:port).
 */
static __always_inline int wanted_quote(__be16 *ports, void *end, const __u8 *src,
					const __u8 *dst, int alen, __u8 family, __u8 proto)
{
	if ((void *)(ports + 2) > end)
		return 0;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	struct addr_key k = {};
	k.family = family;
	k.proto = proto;
	__builtin_memcpy(k.addr, src, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	if (in_map(&services, &k, ports[0]))
		return 1;
	__builtin_memcpy(k.addr, dst, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	return in_map(&reals, &k, ports[1]);
}

/*
 * A fragment from src to dst: wanted if dst is a VIP, or if src is a NAT real server (its
 * address-alone entry in `reals`) and dst is not the director's own address.
 */
static __always_inline int wanted_fragment(const __u8 *src, const __u8 *dst, int alen,
					   __u8 family)
{
	if (is_vip(dst, alen, family))
		return 1;
	struct addr_key k = {};
	k.family = family;
	k.proto = PROTO_ANY;
	__builtin_memcpy(k.addr, src, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	if (!bpf_map_lookup_elem(&reals, &k))
		return 0;
	__builtin_memcpy(k.addr, dst, 16);
	if (alen == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	return bpf_map_lookup_elem(&locals, &k) == 0;
}

/* IPv4 addresses are widened into zeroed 16-byte buffers so one key layout serves both. */
static __always_inline int wanted_v4(struct iphdr *ip, void *end)
{
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return 0;
	__u8 src[16] = {}, dst[16] = {};
	__builtin_memcpy(src, &ip->saddr, 4);
	__builtin_memcpy(dst, &ip->daddr, 4);
	if (ip->frag_off & bpf_htons(0x3fff))
		return wanted_fragment(src, dst, 4, FAMILY_V4);
	void *l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP)
		return wanted_l4(l4, end, src, dst, 4, FAMILY_V4, ip->protocol);
	if (ip->protocol != IPPROTO_ICMP)
		return 0;
	struct icmp_err *icmp = l4;
	if ((void *)(icmp + 1) > end)
		return 0;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
	    icmp->type != ICMP_PARAMETERPROB)
		return 0;
	if (is_vip(dst, 4, FAMILY_V4))
		return 1;
	struct iphdr *q = (void *)(icmp + 1);
	if ((void *)(q + 1) > end || q->version != 4 || q->ihl < 5)
		return 0;
	__u8 qs[16] = {}, qd[16] = {};
	__builtin_memcpy(qs, &q->saddr, 4);
	__builtin_memcpy(qd, &q->daddr, 4);
	return wanted_quote((void *)q + q->ihl * 4, end, qs, qd, 4, FAMILY_V4, q->protocol);
}

static __always_inline int wanted_v6(struct ipv6hdr *ip, void *end)
{
	if ((void *)(ip + 1) > end || ip->version != 6)
		return 0;
	const __u8 *src = (const __u8 *)&ip->saddr, *dst = (const __u8 *)&ip->daddr;
	void *l4 = ip + 1;
	switch (ip->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return wanted_l4(l4, end, src, dst, 16, FAMILY_V6, ip->nexthdr);
	case IPPROTO_FRAGMENT:
		return wanted_fragment(src, dst, 16, FAMILY_V6);
	case IPPROTO_ICMPV6:
		break;
	default:
		return 0;
	}
	struct icmp_err *icmp = l4;
	if ((void *)(icmp + 1) > end)
		return 0;
	/* Types below 128 are errors: unreachable, packet too big, time exceeded, param. */
	if (icmp->type >= 128)
		return 0;
	if (is_vip(dst, 16, FAMILY_V6))
		return 1;
	struct ipv6hdr *q = (void *)(icmp + 1);
	if ((void *)(q + 1) > end || q->version != 6)
		return 0;
	return wanted_quote((void *)(q + 1), end, (const __u8 *)&q->saddr,
			    (const __u8 *)&q->daddr, 16, FAMILY_V6, q->nexthdr);
}

SEC("xdp")
int xdp_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end) {
		count(CNT_PARSE_PASS);
		return XDP_PASS;
	}
	/* The I/G bit marks broadcast and multicast: those are for everyone. */
	if (!(eth->h_dest[0] & 1)) {
		struct mac_key mk = { .ifindex = ctx->ingress_ifindex };
		__builtin_memcpy(mk.mac, eth->h_dest, 6);
		if (!bpf_map_lookup_elem(&macs, &mk)) {
			count(CNT_OTHERHOST);
			return XDP_PASS;
		}
	}
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		/* TCI (2 bytes) then the encapsulated EtherType. */
		__be16 *vlan = l3;
		if ((void *)(vlan + 2) > end) {
			count(CNT_PARSE_PASS);
			return XDP_PASS;
		}
		proto = vlan[1];
		l3 = vlan + 2;
	}
	int wanted = 0;
	if (proto == bpf_htons(ETH_P_IP))
		wanted = wanted_v4(l3, end);
	else if (proto == bpf_htons(ETH_P_IPV6))
		wanted = wanted_v6(l3, end);
	if (!wanted) {
		count(CNT_PASS);
		return XDP_PASS;
	}
	__u32 zero = 0;
	__u32 *is_standby = bpf_map_lookup_elem(&standby, &zero);
	if (is_standby && *is_standby) {
		count(CNT_STANDBY);
		return XDP_DROP;
	}
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&iface_slots, &ifindex);
	if (!base) {
		count(CNT_PASS);
		return XDP_PASS;
	}
	count(CNT_REDIRECT);
	/* With no socket bound at the slot the packet passes (flags = default action). */
	return bpf_redirect_map(&xsks, *base + ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
