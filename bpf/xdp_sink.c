// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0
/*
 * pktgen's sink: every frame an interface receives goes to the AF_XDP socket of its rx
 * queue. The sink must see what a director forwards in every mode, IPIP (tunnel mode)
 * included, which fastlb's service filter is right not to take; with no socket at the
 * queue's slot the frame passes to the kernel.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
