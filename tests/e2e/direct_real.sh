#!/usr/bin/env bash
# Usage: direct_real.sh nat. In nat mode the XDP filter redirects every packet whose
# source is a real server's addr:port (a NAT reply) into AF_XDP. A reply that belongs to no
# fastlb connection, here rs1's answer to a client that talks to rs1:80 directly through
# the director (an administrator, a monitoring system), is `Verdict::Pass` in the pipeline;
# the AF_XDP worker hands it to the kernel's IP output (a raw socket), which routes it, as
# IPVS lets such replies through (ip_vs_out finds no connection: NF_ACCEPT) for the kernel
# to forward.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
lab_up "$MODE-direct" "$MODE"
A=$(cx curl -s --max-time 3 "http://$RS1/") || true
dx curl -s 127.0.0.1:9108/metrics | grep '^fastlb_worker_passed_frames_total' || true
[[ $A == "served by rs1" ]] || fail "client -> rs1:80 directly through the director: '$A'"
pass "a real server's port is reachable directly through the director"
