// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0
/*
 * Passes everything. On veth, XDP_TX or a redirect out of a device only works when the
 * peer device has an XDP program of its own; the namespace lab puts this one there.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
