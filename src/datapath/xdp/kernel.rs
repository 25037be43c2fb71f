//! Handing a packet to the kernel from user space.
//!
//! An AF_XDP socket cannot give a received frame back to the kernel's receive path. For the
//! few packets that are the kernel's after all (the pipeline says [`Verdict::Pass`]: a NAT
//! packet whose next hop's MAC is not known yet, a packet from a real server that belongs to
//! no connection) the worker sends the IP packet through a raw IP socket: the kernel routes
//! it, resolves the next hop's neighbour entry and queues the packet meanwhile, as it would
//! have for a packet it forwarded itself. This is a cold path: one syscall per such packet.
//!
//! [`Verdict::Pass`]: crate::datapath::Verdict::Pass

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::time::Instant;

/// Packets a worker may hand to the kernel per millisecond, on average (50 000 a second:
/// a `sendto` costs a few microseconds, so this is at most a fifth or so of a core).
pub(crate) const PASS_PER_MS: u32 = 50;
/// Packets a worker may hand over at once after a quiet spell (the bucket's depth).
pub(crate) const PASS_BURST: u32 = 1024;

/// A token bucket in front of [`KernelPath::send`], one per worker: the syscall per packet
/// of this cold path must not become the worker's whole work when something (a neighbour
/// that does not resolve under a NAT flood, a spoofed real-server source) drives many
/// packets down it. Refills by the worker's clock, in whole milliseconds; no syscall.
#[derive(Debug)]
pub(crate) struct PassBudget {
    tokens: u32,
    /// The clock up to which tokens were added.
    filled: Instant,
}

impl PassBudget {
    /// A full bucket (filled up to the clock's zero: the first `take` tops it up).
    pub(crate) fn new() -> PassBudget {
        PassBudget {
            tokens: PASS_BURST,
            filled: Instant::from_micros(0),
        }
    }

    /// Takes a token at `now` if one is left: whether the packet may go to the kernel.
    #[inline]
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let ms = now.saturating_since(self.filled).as_millis();
        if ms > 0 {
            let add = u32::try_from(ms)
                .unwrap_or(u32::MAX)
                .saturating_mul(PASS_PER_MS);
            self.tokens = self.tokens.saturating_add(add).min(PASS_BURST);
            self.filled = self.filled + std::time::Duration::from_millis(ms as u64);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Raw IPv4 and IPv6 sockets that send whole IP packets (headers included).
#[derive(Debug)]
pub struct KernelPath {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
}

fn raw_socket(family: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    // SAFETY: `fd` is a descriptor we own, just returned by socket(2).
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

impl KernelPath {
    /// Opens the sockets (needs CAP_NET_RAW); a family whose socket cannot be opened is
    /// simply not handed over.
    pub fn open() -> KernelPath {
        KernelPath {
            v4: raw_socket(libc::AF_INET),
            v6: raw_socket(libc::AF_INET6),
        }
    }

    /// Sends the IP packet at the start of `packet` (no Ethernet header) to its destination
    /// through the kernel's routing. Returns whether the kernel took it.
    #[inline(never)]
    #[cold]
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = match packet.first().map(|b| b >> 4) {
            Some(4) if packet.len() >= 20 => {
                IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).expect("4 bytes"))
            }
            Some(6) if packet.len() >= 40 => {
                IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).expect("16 bytes"))
            }
            _ => return Err(io::Error::from(io::ErrorKind::InvalidData)),
        };
        let unsupported = || io::Error::from(io::ErrorKind::Unsupported);
        let rc = match dst {
            IpAddr::V4(a) => {
                let fd = self.v4.as_ref().ok_or_else(unsupported)?;
                // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                // SAFETY: `packet` and `sa` are valid for the lengths passed.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            IpAddr::V6(a) => {
                let fd = self.v6.as_ref().ok_or_else(unsupported)?;
                // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = a.octets();
                // SAFETY: `packet` and `sa` are valid for the lengths passed.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let t0 = Instant::from_micros(1_000_000);
        let mut b = PassBudget::new();
        let burst = (0..PASS_BURST * 2).filter(|_| b.take(t0)).count();
        assert_eq!(burst, PASS_BURST as usize, "a full bucket, then nothing");
        // Half a millisecond adds nothing; a whole one adds PASS_PER_MS.
        assert!(!b.take(t0 + std::time::Duration::from_micros(500)));
        let t1 = t0 + std::time::Duration::from_millis(1);
        let refill = (0..PASS_PER_MS * 2).filter(|_| b.take(t1)).count();
        assert_eq!(refill, PASS_PER_MS as usize);
        // Over a second at a steady offer of 100 a millisecond, about PASS_PER_MS pass.
        let mut passed = 0;
        for ms in 2..1002u64 {
            let t = t0 + std::time::Duration::from_millis(ms);
            passed += (0..100).filter(|_| b.take(t)).count();
        }
        assert_eq!(passed, 1000 * PASS_PER_MS as usize);
        // A long quiet spell fills the bucket to its depth, no more.
        let later = t0 + std::time::Duration::from_secs(3600);
        let burst = (0..PASS_BURST * 2).filter(|_| b.take(later)).count();
        assert_eq!(burst, PASS_BURST as usize);
    }
}
