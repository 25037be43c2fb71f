// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0
/*
 * Tunnel-mode decapsulation for a real server of the namespace lab: this kernel has no
 * `ipip` device, so the real server strips the director's outer IP header in XDP and passes
 * the inner packet (addressed to the VIP it holds on lo) to its stack.
 *
 * Handles IPv4 or IPv6 outer headers carrying IPv4 (protocol 4) or IPv6 (protocol 41), with
 * no IPv4 options' worth of special cases beyond honouring ihl and no IPv6 extension
 * headers. Everything else passes unchanged.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int tun_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	int outer_len;
	__u8 inner;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return XDP_PASS;
		/* A fragmented outer packet cannot be stripped piecewise. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return XDP_PASS;
		outer_len = ip->ihl * 4;
		inner = ip->protocol;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		outer_len = sizeof(*ip6);
		inner = ip6->nexthdr;
	} else {
		return XDP_PASS;
	}
	__be16 inner_proto;
	if (inner == IPPROTO_IPIP)
		inner_proto = bpf_htons(ETH_P_IP);
	else if (inner == IPPROTO_IPV6)
		inner_proto = bpf_htons(ETH_P_IPV6);
	else
		return XDP_PASS;

	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	copy.h_proto = inner_proto;
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
