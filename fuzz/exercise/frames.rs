//! The body of the `parse_rewrite` fuzz target, shared with `tests/fuzz_corpus.rs`.
//!
//! Parses the frame, then runs every rewrite on a copy of it; whatever a rewrite accepts
//! must parse again afterwards (the rewrites keep lengths and IPv4 header checksums valid).

use std::net::IpAddr;

use fastlb::forward::{icmp, mac, nat, tun};
use fastlb::stats::DropReason;
use fastlb::wire::{parse_frame, Frame, IpVersion, Parsed};

const ROOM: usize = 256;

fn addrs(v: IpVersion) -> (IpAddr, IpAddr) {
    match v {
        IpVersion::V4 => ([10, 0, 0, 1].into(), [10, 1, 0, 5].into()),
        IpVersion::V6 => ("fd00::1".parse().unwrap(), "fd00::5".parse().unwrap()),
    }
}

fn reparse(buf: &[u8], head: usize, len: usize) {
    parse_frame(&buf[head..head + len]).expect("a rewritten frame parses");
}

/// Runs a rewrite that may grow the frame at `buf[ROOM..ROOM + len]`; its bounds after.
fn grown(
    buf: &mut [u8],
    len: usize,
    f: impl FnOnce(&mut Frame<'_>) -> Result<(), DropReason>,
) -> Result<(usize, usize), DropReason> {
    let mut frame = Frame::new(buf, ROOM, len);
    f(&mut frame)?;
    Ok((frame.head(), frame.len()))
}

/// Runs parse_frame and every rewrite over `data`.
pub fn exercise(data: &[u8]) {
    let Ok(p) = parse_frame(data) else { return };
    let Some(ip) = p.ip else { return };
    let (a, b) = addrs(ip.version);
    let mut buf = vec![0u8; ROOM + data.len()];
    let fresh = |buf: &mut Vec<u8>| buf[ROOM..].copy_from_slice(data);
    let in_place = |buf: &mut Vec<u8>, f: &dyn Fn(&mut [u8], &Parsed) -> bool| {
        fresh(buf);
        if f(&mut buf[ROOM..], &p) {
            reparse(buf, ROOM, data.len());
        }
    };
    in_place(&mut buf, &|f, p| nat::dnat(f, p, b, 8080).is_ok());
    in_place(&mut buf, &|f, p| nat::snat(f, p, a, 80).is_ok());
    in_place(&mut buf, &|f, p| {
        mac::direct_route(f, p, [1; 6], [2; 6]).is_ok()
    });
    in_place(&mut buf, &|f, p| {
        icmp::nat_to_real_server(f, p, b, 8080).is_ok()
    });
    in_place(&mut buf, &|f, p| icmp::nat_to_client(f, p, a, 80).is_ok());

    fresh(&mut buf);
    if let Ok((h, l)) = grown(&mut buf, data.len(), |f| tun::encapsulate(f, &p, a, b, 1)) {
        reparse(&buf, h, l);
    }
    let _ = tun::check_mtu(&p, 1500, 20);
    fresh(&mut buf);
    if let Ok((h, l)) = grown(&mut buf, data.len(), |f| tun::too_big_reply(f, &p, 1480, 1)) {
        reparse(&buf, h, l);
    }
    fresh(&mut buf);
    if let Ok((h, l)) = grown(&mut buf, data.len(), |f| {
        icmp::error_reply(f, &p, icmp::ErrorReply::TimeExceeded, 1)
    }) {
        reparse(&buf, h, l);
    }
}
