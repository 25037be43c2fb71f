//! Trivial processors that prove the I/O layer and measure its ceiling: no parsing beyond
//! the Ethernet header; and [`Counted`], which counts their frames as the pipeline counts its
//! own.

use std::sync::Arc;

use crate::datapath::{Frame, PacketProcessor, Verdict};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Instant;

const ETH_HEADER: usize = 14;

/// Sends every frame back where it came from, with the MAC addresses swapped.
#[derive(Copy, Clone, Debug, Default)]
pub struct Bounce;

impl PacketProcessor for Bounce {
    #[inline]
    fn process(&mut self, _now: Instant, frame: &mut Frame<'_>) -> Verdict {
        if frame.len() < ETH_HEADER {
            return Verdict::Drop(DropReason::Malformed);
        }
        let d = frame.data_mut();
        let (dst, rest) = d.split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
        Verdict::Transmit
    }
}

/// Rewrites the destination MAC to a fixed next hop and the source MAC to the egress
/// interface's own, then transmits: direct routing to one real server, or a bare L2
/// forwarder.
#[derive(Copy, Clone, Debug)]
pub struct FixedMac {
    /// New destination MAC.
    pub dst: [u8; 6],
    /// New source MAC (the egress interface's address).
    pub src: [u8; 6],
}

impl PacketProcessor for FixedMac {
    #[inline]
    fn process(&mut self, _now: Instant, frame: &mut Frame<'_>) -> Verdict {
        if frame.len() < ETH_HEADER {
            return Verdict::Drop(DropReason::Malformed);
        }
        let d = frame.data_mut();
        d[..6].copy_from_slice(&self.dst);
        d[6..12].copy_from_slice(&self.src);
        Verdict::Transmit
    }
}

/// A processor whose frames are counted by verdict ([`Verdict::count`]) into a worker's
/// [`WorkerStats`]: the pipeline counts its own frames, a trivial forwarder is wrapped in this
/// so the worker's counters read the same under either.
#[derive(Debug)]
pub struct Counted<P> {
    inner: P,
    stats: Arc<WorkerStats>,
}

impl<P> Counted<P> {
    /// `inner`, counting into `stats`.
    pub fn new(inner: P, stats: Arc<WorkerStats>) -> Counted<P> {
        Counted { inner, stats }
    }

    /// The wrapped processor.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: PacketProcessor> PacketProcessor for Counted<P> {
    #[inline]
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let verdict = self.inner.process(now, frame);
        verdict.count(&self.stats);
        verdict
    }

    #[inline]
    fn process_batch(&mut self, now: Instant, frames: &mut [Frame<'_>], verdicts: &mut [Verdict]) {
        self.inner.process_batch(now, frames, verdicts);
        for v in verdicts.iter().take(frames.len()) {
            v.count(&self.stats);
        }
    }

    fn between_batches(&mut self, now: Instant) {
        self.inner.between_batches(now);
    }

    fn has_output(&self) -> bool {
        self.inner.has_output()
    }

    fn emit<'b>(&mut self, now: Instant, buf: &'b mut [u8]) -> Option<(Frame<'b>, Verdict)> {
        let out = self.inner.emit(now, buf);
        if let Some((_, verdict)) = &out {
            verdict.count_emitted(&self.stats);
        }
        out
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes() -> Vec<u8> {
        let mut v = vec![0u8; 256 + 60];
        v[256..262].copy_from_slice(&[1, 1, 1, 1, 1, 1]);
        v[262..268].copy_from_slice(&[2, 2, 2, 2, 2, 2]);
        v[268] = 0x08;
        v
    }

    #[test]
    fn bounce_swaps_macs_and_keeps_the_rest() {
        let mut buf = frame_bytes();
        let mut f = Frame::new(&mut buf, 256, 60);
        assert_eq!(Bounce.process(Instant::ZERO, &mut f), Verdict::Transmit);
        assert_eq!(&f.data()[..13], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 8]);
    }

    #[test]
    fn fixed_mac_rewrites_both_addresses() {
        let mut buf = frame_bytes();
        let mut f = Frame::new(&mut buf, 256, 60);
        let mut p = FixedMac {
            dst: [0xaa; 6],
            src: [0xbb; 6],
        };
        assert_eq!(p.process(Instant::ZERO, &mut f), Verdict::Transmit);
        let eth = etherparse::Ethernet2HeaderSlice::from_slice(f.data()).unwrap();
        assert_eq!(eth.destination(), [0xaa; 6]);
        assert_eq!(eth.source(), [0xbb; 6]);
        assert_eq!(eth.ether_type(), etherparse::EtherType::IPV4);
    }

    #[test]
    fn runts_are_dropped() {
        let mut buf = [0u8; 10];
        let mut f = Frame::new(&mut buf, 0, 10);
        assert_eq!(
            Bounce.process(Instant::ZERO, &mut f),
            Verdict::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn counted_counts_each_frame_by_its_verdict() {
        let stats = Arc::new(WorkerStats::new(0));
        let mut p = Counted::new(Bounce, Arc::clone(&stats));
        let mut good = frame_bytes();
        let mut runt = [0u8; 10];
        let mut frames = [Frame::new(&mut good, 256, 60), Frame::new(&mut runt, 0, 10)];
        let mut verdicts = [Verdict::Pass; 2];
        p.process_batch(Instant::ZERO, &mut frames, &mut verdicts);
        let mut again = frame_bytes();
        p.process(Instant::ZERO, &mut Frame::new(&mut again, 256, 60));
        let c = stats.counters();
        assert_eq!((c.rx, c.tx, c.passed), (3, 2, 0));
        assert_eq!(c.dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("0a:1B:02:ff:00:9"),
            Some([0x0a, 0x1b, 2, 0xff, 0, 9])
        );
        assert_eq!(parse_mac("0a:1b:02:ff:00"), None);
        assert_eq!(parse_mac("0a:1b:02:ff:00:09:10"), None);
        assert_eq!(parse_mac("0a:1b:02:ff:00:zz"), None);
        assert_eq!(parse_mac("0a:1b::ff:00:09"), None);
    }
}
