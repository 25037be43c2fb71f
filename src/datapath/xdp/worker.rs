//! The ring loop of one worker: recycle completions, refill, receive a batch, hand it to
//! the [`PacketProcessor`] whole ([`PacketProcessor::process_batch`], the path the pipeline
//! benchmark measures), queue the verdicts for transmit, kick.
//!
//! A worker owns the UMEM of one queue index and one [`Port`] per interface on that queue.
//! It knows nothing of packets; the processor knows nothing of rings. [`Worker::step`] is
//! one pass and runs the same over real sockets and over the in-memory rings of the tests.

use std::sync::Arc;

use super::kernel::{KernelPath, PassBudget};
use super::socket::{Desc, Port};
use super::umem::Umem;
use crate::datapath::{Frame, PacketProcessor, Verdict};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Instant;

/// Largest rx batch a worker takes in one pass.
pub const MAX_BATCH: usize = 256;
/// Frames handed to the processor in one `process_batch` call: the pipeline's prefetch
/// window, and small enough that the frame views live on the stack.
const PROCESS_CHUNK: usize = 64;
/// Most tx kicks per socket per pass.
const MAX_KICKS: usize = 16;

/// The IP packet of an Ethernet frame (one optional 802.1Q tag), without Ethernet padding,
/// if it carries one.
fn ip_packet(frame: &[u8]) -> Option<&[u8]> {
    let (ethertype, l3) = match frame.get(12..14)? {
        [0x81, 0x00] => (frame.get(16..18)?, 18),
        t => (t, 14),
    };
    let ip = frame.get(l3..)?;
    let len = match ethertype {
        [0x08, 0x00] => usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])),
        [0x86, 0xdd] => 40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])),
        _ => return None,
    };
    ip.get(..len)
}

/// The state of one worker thread.
#[derive(Debug)]
pub(crate) struct Worker<P> {
    // Field order matters: ports (sockets) close before the UMEM is unmapped.
    ports: Vec<Port>,
    umem: Umem,
    /// Frames owned by user space and not in use: the stack the fill rings draw from.
    free: Vec<u64>,
    processor: P,
    /// The worker's counters, shared with its processor: the processor counts frames by
    /// verdict, the worker adds what only the I/O layer sees.
    stats: Arc<WorkerStats>,
    /// Where frames the processor passes go: the kernel's IP output.
    kernel: KernelPath,
    /// The token bucket in front of `kernel`.
    pass_budget: PassBudget,
    batch: usize,
    /// Port index a frame received on port i is transmitted on; `None` = no egress socket
    /// on this queue for the configured interface (counted as `no_route`).
    egress: Vec<Option<usize>>,
    /// Port index of each `--iface` (index of the interface list), for frames whose
    /// processor chose their egress interface; `None` where this queue has no socket.
    iface_ports: Vec<Option<usize>>,
    /// The `--iface` index of each port (the inverse of `iface_ports`): what
    /// [`Frame::set_ingress`] records for a frame received on it.
    port_ifaces: Vec<Option<u16>>,
    /// Tx descriptors queued per port in this pass, waiting for a kick.
    queued: Vec<u32>,
}

impl<P: PacketProcessor> Worker<P> {
    /// A worker over `ports` sharing `umem`. Every frame starts out free.
    pub(crate) fn new(
        umem: Umem,
        ports: Vec<Port>,
        egress: Vec<Option<usize>>,
        processor: P,
        stats: Arc<WorkerStats>,
        batch: usize,
    ) -> Worker<P> {
        assert_eq!(ports.len(), egress.len(), "one egress entry per port");
        let fs = u64::from(umem.frame_size());
        let free = (0..u64::from(umem.frames()))
            .rev()
            .map(|i| i * fs)
            .collect();
        let queued = vec![0; ports.len()];
        let iface_ports = (0..ports.len()).map(Some).collect();
        let port_ifaces = (0..ports.len()).map(|p| u16::try_from(p).ok()).collect();
        Worker {
            iface_ports,
            port_ifaces,
            ports,
            umem,
            free,
            processor,
            stats,
            kernel: KernelPath::open(),
            pass_budget: PassBudget::new(),
            batch: batch.clamp(1, MAX_BATCH),
            egress,
            queued,
        }
    }

    /// Maps interface-list indexes (what [`Frame::set_egress`] names) to this worker's ports;
    /// by default interface i is port i.
    pub(crate) fn with_iface_ports(mut self, iface_ports: Vec<Option<usize>>) -> Worker<P> {
        self.port_ifaces = vec![None; self.ports.len()];
        for (iface, port) in iface_ports.iter().enumerate() {
            if let Some(slot) = port.and_then(|p| self.port_ifaces.get_mut(p)) {
                *slot = u16::try_from(iface).ok();
            }
        }
        self.iface_ports = iface_ports;
        self
    }

    /// The ports, for registering their sockets in the XSKMAP.
    pub(crate) fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Frames currently owned by user space (for tests of frame conservation).
    #[cfg(test)]
    pub(crate) fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Gives the processor its between-batches call.
    pub(crate) fn between_batches(&mut self, now: Instant) {
        self.processor.between_batches(now);
    }

    /// One pass over every port. Returns the number of frames received.
    pub(crate) fn step(&mut self, now: Instant) -> usize {
        self.recycle();
        let mut received = 0;
        let mut descs = [Desc::default(); MAX_BATCH];
        for i in 0..self.ports.len() {
            let n = {
                let rx = &mut self.ports[i].rx;
                let mut n = 0;
                while n < self.batch {
                    match rx.pop() {
                        Some(d) => {
                            descs[n] = d;
                            n += 1;
                        }
                        None => break,
                    }
                }
                rx.release();
                n
            };
            for chunk in descs[..n].chunks(PROCESS_CHUNK) {
                self.handle_batch(now, i, chunk);
            }
            received += n;
        }
        self.send_output(now);
        if received > 0 {
            self.stats.batches.add(1);
        }
        self.flush();
        received
    }

    /// Completed transmissions come back to the free stack; the fill rings are topped up
    /// from it, and the kernel is woken if it asked for fill-ring entries.
    fn recycle(&mut self) {
        for p in &mut self.ports {
            while let Some(addr) = p.comp.pop() {
                self.free.push(self.umem.frame_base(addr));
            }
            p.comp.release();
        }
        for p in &mut self.ports {
            let n = p
                .fill
                .free(self.free.len() as u32)
                .min(self.free.len() as u32);
            for _ in 0..n {
                let addr = self.free.pop().expect("counted above");
                let pushed = p.fill.push(addr);
                debug_assert!(pushed, "free() promised the slot");
            }
            if n > 0 {
                p.fill.commit();
            }
        }
    }

    /// Hands the frames of `descs`, received on port `ingress`, to the processor in one
    /// [`PacketProcessor::process_batch`] call, then queues, passes or frees each by its
    /// verdict.
    #[inline]
    fn handle_batch(&mut self, now: Instant, ingress: usize, descs: &[Desc]) {
        debug_assert!(descs.len() <= PROCESS_CHUNK);
        let iface = self.port_ifaces.get(ingress).copied().flatten();
        let mut frames: [Frame<'_>; PROCESS_CHUNK] =
            std::array::from_fn(|_| Frame::new(&mut [], 0, 0));
        let mut bases = [0u64; PROCESS_CHUNK];
        let mut n = 0;
        for d in descs {
            let base = self.umem.frame_base(d.addr);
            let head = (d.addr - base) as usize;
            // SAFETY: the kernel handed this frame to us on the rx ring; until we push it on
            // a fill or tx ring, nobody else touches it, and this is the only slice of it
            // (each descriptor of a batch names a different frame).
            let buf = unsafe { self.umem.frame_mut(base) };
            if head + d.len as usize > buf.len() {
                self.stats.count_drop(DropReason::Malformed);
                self.free.push(base);
                continue;
            }
            let mut frame = Frame::new(buf, head, d.len as usize);
            if let Some(iface) = iface {
                frame.set_ingress(iface);
            }
            frames[n] = frame;
            bases[n] = base;
            n += 1;
        }
        let mut verdicts = [Verdict::Pass; PROCESS_CHUNK];
        self.processor
            .process_batch(now, &mut frames[..n], &mut verdicts[..n]);
        for ((frame, verdict), &base) in frames[..n].iter().zip(&verdicts).zip(&bases) {
            match *verdict {
                Verdict::Transmit => {
                    let out = Desc {
                        addr: base + frame.head() as u64,
                        len: frame.len() as u32,
                        options: 0,
                    };
                    let port = match frame.egress() {
                        Some(p) => self.iface_ports.get(usize::from(p)).copied().flatten(),
                        None => self.egress[ingress],
                    };
                    match port {
                        Some(e) if self.ports[e].tx.push(out) => {
                            self.queued[e] += 1;
                        }
                        Some(_) => {
                            self.stats.tx_ring_full.add(1);
                            self.free.push(base);
                        }
                        None => {
                            self.stats.count_drop(DropReason::NoRoute);
                            self.free.push(base);
                        }
                    }
                }
                Verdict::Pass => {
                    if let Some(ip) = ip_packet(frame.data()) {
                        if !self.pass_budget.take(now) {
                            self.stats.to_kernel_limited.add(1);
                        } else if self.kernel.send(ip).is_ok() {
                            self.stats.to_kernel.add(1);
                        }
                    }
                    self.free.push(base);
                }
                Verdict::Drop(_) | Verdict::Held => self.free.push(base),
            }
        }
    }

    /// Sends the frames the processor emits on its own ([`PacketProcessor::emit`]: held
    /// fragments released by their first one), each copied into a free frame. With no free
    /// frame (all in the fill ring or in flight) they wait for a later pass.
    fn send_output(&mut self, now: Instant) {
        while self.processor.has_output() {
            let Some(base) = self.free.pop() else {
                return;
            };
            // SAFETY: the frame was on the free stack: user space owns it and nothing else
            // refers to it until it is pushed on a ring.
            let buf = unsafe { self.umem.frame_mut(base) };
            let Some((frame, verdict)) = self.processor.emit(now, buf) else {
                self.free.push(base);
                return;
            };
            let port = match frame.egress() {
                Some(p) => self.iface_ports.get(usize::from(p)).copied().flatten(),
                None => frame
                    .ingress()
                    .and_then(|i| self.iface_ports.get(usize::from(i)).copied().flatten())
                    .and_then(|p| self.egress[p]),
            };
            match verdict {
                Verdict::Transmit => {
                    let out = Desc {
                        addr: base + frame.head() as u64,
                        len: frame.len() as u32,
                        options: 0,
                    };
                    match port {
                        Some(e) if self.ports[e].tx.push(out) => self.queued[e] += 1,
                        Some(_) => {
                            self.stats.tx_ring_full.add(1);
                            self.free.push(base);
                        }
                        None => {
                            self.stats.count_drop(DropReason::NoRoute);
                            self.free.push(base);
                        }
                    }
                }
                Verdict::Pass => {
                    if let Some(ip) = ip_packet(frame.data()) {
                        if !self.pass_budget.take(now) {
                            self.stats.to_kernel_limited.add(1);
                        } else if self.kernel.send(ip).is_ok() {
                            self.stats.to_kernel.add(1);
                        }
                    }
                    self.free.push(base);
                }
                Verdict::Drop(_) | Verdict::Held => self.free.push(base),
            }
        }
    }

    /// Publishes queued tx descriptors and kicks every socket whose tx ring still holds
    /// frames and asks for a wakeup, not only those that got new frames in this pass:
    /// frames a previous kick left behind would otherwise wait for the next packet routed
    /// to that port, however long that takes.
    fn flush(&mut self) {
        let mut kicks = 0u64;
        for (p, q) in self.ports.iter_mut().zip(self.queued.iter_mut()) {
            if *q > 0 {
                p.tx.commit();
                *q = 0;
            }
            // In copy mode one sendto sends a bounded number of frames (32 in current
            // kernels): kick again while each kick makes progress, so the ring drains
            // instead of filling up across batches.
            let mut left = p.tx.outstanding();
            for _ in 0..MAX_KICKS {
                if left == 0 || !p.tx.needs_wakeup() {
                    break;
                }
                p.kick_tx();
                kicks += 1;
                let now_left = p.tx.outstanding();
                if now_left >= left {
                    break;
                }
                left = now_left;
            }
        }
        if kicks > 0 {
            self.stats.kicks.add(kicks);
        }
    }

    /// Whether some tx ring holds frames the kernel has not taken yet (as of the last
    /// look): an idle worker must not sleep long on them.
    pub(crate) fn tx_pending(&self) -> bool {
        self.ports.iter().any(|p| p.tx.in_flight() > 0)
    }

    /// For busy polling: wakes the kernel where a fill ring asks for it.
    pub(crate) fn kick_fill(&mut self) {
        let mut kicks = 0;
        for p in &self.ports {
            if p.fill.needs_wakeup() {
                p.kick_rx();
                kicks += 1;
            }
        }
        if kicks > 0 {
            self.stats.kicks.add(kicks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::forwarders::Counted;
    use super::super::ring::mem::TestRing;
    use super::super::ring::{Consumer, Producer};
    use super::*;
    use std::sync::atomic::Ordering;

    /// Plays the kernel's side of one port's rings.
    struct FakeKernel {
        rx: TestRing<Desc>,
        tx: TestRing<Desc>,
        fill: TestRing<u64>,
        comp: TestRing<u64>,
    }

    struct KernelEnds {
        rx: Producer<Desc>,
        tx: Consumer<Desc>,
        fill: Consumer<u64>,
        comp: Producer<u64>,
    }

    impl FakeKernel {
        fn new(size: u32) -> FakeKernel {
            FakeKernel {
                rx: TestRing::new(size, u32::MAX - 2),
                tx: TestRing::new(size, 7),
                fill: TestRing::new(size, u32::MAX),
                comp: TestRing::new(size, 0),
            }
        }
        fn split(&mut self) -> (Port, KernelEnds) {
            let port = Port::from_rings(
                Consumer::new(self.rx.mem()),
                Producer::new(self.tx.mem()),
                Producer::new(self.fill.mem()),
                Consumer::new(self.comp.mem()),
            );
            let k = KernelEnds {
                rx: Producer::new(self.rx.mem()),
                tx: Consumer::new(self.tx.mem()),
                fill: Consumer::new(self.fill.mem()),
                comp: Producer::new(self.comp.mem()),
            };
            (port, k)
        }
    }

    impl KernelEnds {
        /// Takes a fill entry, writes `bytes` at the kernel's 256-byte offset, posts it on rx.
        fn receive(&mut self, umem: &Umem, bytes: &[u8]) -> bool {
            let Some(base) = self.fill.pop() else {
                return false;
            };
            self.fill.release();
            // SAFETY: the frame came off the fill ring: the "kernel" owns it now.
            let f = unsafe { umem.frame_mut(base) };
            f[256..256 + bytes.len()].copy_from_slice(bytes);
            assert!(self.rx.push(Desc {
                addr: base + 256,
                len: bytes.len() as u32,
                options: 0
            }));
            self.rx.commit();
            true
        }
        /// Takes every tx descriptor, completes it, returns what was sent.
        fn transmit(&mut self, umem: &Umem) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while let Some(d) = self.tx.pop() {
                let base = umem.frame_base(d.addr);
                // SAFETY: the frame is on the tx ring: the "kernel" owns it now.
                let f = unsafe { umem.frame_mut(base) };
                let off = (d.addr - base) as usize;
                out.push(f[off..off + d.len as usize].to_vec());
                assert!(self.comp.push(d.addr));
            }
            self.tx.release();
            self.comp.commit();
            out
        }
    }

    /// Swaps the MAC addresses; drops frames shorter than an Ethernet header.
    struct Swap;
    impl PacketProcessor for Swap {
        fn process(&mut self, _now: Instant, f: &mut Frame<'_>) -> Verdict {
            if f.len() < 14 {
                return Verdict::Drop(DropReason::Malformed);
            }
            let d = f.data_mut();
            for i in 0..6 {
                d.swap(i, i + 6);
            }
            Verdict::Transmit
        }
    }

    fn pkt(n: u8, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len as u8).collect();
        v[0] = n;
        v
    }

    #[test]
    fn frames_go_round_and_come_back() {
        // The fake kernel reaches frames through the worker's own UMEM.
        let mut k = FakeKernel::new(4);
        let (port, mut kend) = k.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(8, 2048),
            vec![port],
            vec![Some(0)],
            Counted::new(Swap, stats.clone()),
            stats.clone(),
            64,
        );
        // Nothing received yet: the fill ring takes 4 frames, 4 stay free.
        assert_eq!(w.step(Instant::ZERO), 0);
        assert_eq!(w.free_frames(), 4);
        for round in 0..10u8 {
            assert!(kend.receive(&w.umem, &pkt(round, 60)));
            assert!(kend.receive(&w.umem, &pkt(round + 100, 8)));
            assert_eq!(w.step(Instant::ZERO), 2);
            let sent = kend.transmit(&w.umem);
            assert_eq!(sent.len(), 1, "the short frame is dropped");
            let mut want = pkt(round, 60);
            for i in 0..6 {
                want.swap(i, i + 6);
            }
            assert_eq!(sent[0], want);
        }
        w.step(Instant::ZERO);
        // Conservation: every frame is free or in the fill ring.
        assert_eq!(w.free_frames(), 4);
        let s = stats.counters();
        assert_eq!((s.rx, s.tx, s.batches), (20, 10, 10));
        assert_eq!(s.dropped(DropReason::Malformed), 10);
        assert_eq!(s.kicks, 0, "no wakeup flag, no kick");
    }

    #[test]
    fn tx_goes_out_the_egress_port_and_kicks_when_asked() {
        let mut a = FakeKernel::new(8);
        let mut b = FakeKernel::new(8);
        b.tx.flags
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        let (pa, mut ka) = a.split();
        let (pb, mut kb) = b.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(32, 2048),
            vec![pa, pb],
            vec![Some(1), None],
            Counted::new(Swap, stats.clone()),
            stats.clone(),
            2,
        );
        w.step(Instant::ZERO);
        for i in 0..3 {
            assert!(ka.receive(&w.umem, &pkt(i, 20)));
        }
        assert!(kb.receive(&w.umem, &pkt(9, 20)));
        // Batch of 2: the third frame on port a waits for the next pass.
        assert_eq!(w.step(Instant::ZERO), 3);
        assert_eq!(ka.transmit(&w.umem).len(), 0);
        assert_eq!(kb.transmit(&w.umem).len(), 2);
        assert_eq!(w.step(Instant::ZERO), 1);
        assert_eq!(kb.transmit(&w.umem).len(), 1);
        let s = stats.counters();
        // The processor sent all four out; the worker dropped the one from port b.
        assert_eq!(s.dropped(DropReason::NoRoute), 1, "port b has no egress");
        assert_eq!((s.rx, s.tx, s.kicks), (4, 4, 2));
    }

    #[test]
    fn frames_left_on_tx_are_kicked_again_without_new_traffic() {
        let mut k = FakeKernel::new(8);
        k.tx.flags
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        let (port, mut kend) = k.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(32, 2048),
            vec![port],
            vec![Some(0)],
            Counted::new(Swap, stats.clone()),
            stats.clone(),
            64,
        );
        w.step(Instant::ZERO);
        assert!(!w.tx_pending());
        assert!(kend.receive(&w.umem, &pkt(1, 20)));
        assert_eq!(w.step(Instant::ZERO), 1);
        // The kick did not get the frame out (the fake kernel sends only when told):
        // passes with nothing received keep kicking, and the frame counts as pending.
        assert!(w.tx_pending());
        assert_eq!(w.step(Instant::ZERO), 0);
        assert_eq!(w.step(Instant::ZERO), 0);
        assert_eq!(stats.counters().kicks, 3);
        assert_eq!(kend.transmit(&w.umem).len(), 1);
        w.step(Instant::ZERO);
        assert!(!w.tx_pending());
        assert_eq!(stats.counters().kicks, 3, "nothing left, no kick");
    }

    /// Swaps MACs like [`Swap`], and records the size of every batch it is handed; frame
    /// by frame calls are refused, so a worker that stops batching fails the test.
    #[derive(Default)]
    struct Batches(Vec<usize>);
    impl PacketProcessor for Batches {
        fn process(&mut self, _now: Instant, _f: &mut Frame<'_>) -> Verdict {
            panic!("the worker hands whole batches to the processor");
        }
        fn process_batch(
            &mut self,
            now: Instant,
            frames: &mut [Frame<'_>],
            verdicts: &mut [Verdict],
        ) {
            self.0.push(frames.len());
            for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *v = Swap.process(now, f);
            }
        }
    }

    #[test]
    fn a_pass_hands_each_port_s_frames_to_the_processor_as_one_batch() {
        let mut k = FakeKernel::new(128);
        let (port, mut kend) = k.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(256, 2048),
            vec![port],
            vec![Some(0)],
            Counted::new(Batches::default(), stats.clone()),
            stats.clone(),
            MAX_BATCH,
        );
        w.step(Instant::ZERO);
        for i in 0..100u8 {
            // Every tenth frame is too short and dropped by the processor.
            let len = if i % 10 == 9 { 8 } else { 60 };
            assert!(kend.receive(&w.umem, &pkt(i, len)));
        }
        assert_eq!(w.step(Instant::ZERO), 100);
        // One pass: the 100 frames in batches of at most PROCESS_CHUNK, in order.
        assert_eq!(w.processor.inner().0, [PROCESS_CHUNK, 100 - PROCESS_CHUNK]);
        let sent = kend.transmit(&w.umem);
        assert_eq!(sent.len(), 90);
        for (j, f) in sent.iter().enumerate() {
            let i = (j + j / 9) as u8;
            let mut want = pkt(i, 60);
            for b in 0..6 {
                want.swap(b, b + 6);
            }
            assert_eq!(f, &want, "frame {i} in its place");
        }
        let s = stats.counters();
        assert_eq!((s.rx, s.tx, s.batches), (100, 90, 1));
        assert_eq!(s.dropped(DropReason::Malformed), 10);
        assert_eq!(w.step(Instant::ZERO), 0);
        assert_eq!(w.processor.inner().0.len(), 2, "no frames, no call");
    }

    /// Holds every frame it is handed and sends it back, MACs swapped, through `emit` once
    /// the next frame has come (as a first fragment releases the later ones held before it),
    /// out of the interface it came in on.
    #[derive(Default)]
    struct HoldOne {
        held: Option<(Vec<u8>, Option<u16>)>,
        ready: Vec<(Vec<u8>, Option<u16>)>,
    }
    impl PacketProcessor for HoldOne {
        fn process(&mut self, _now: Instant, f: &mut Frame<'_>) -> Verdict {
            if let Some(h) = self.held.take() {
                self.ready.push(h);
            }
            self.held = Some((f.data().to_vec(), f.ingress()));
            Verdict::Held
        }
        fn has_output(&self) -> bool {
            !self.ready.is_empty()
        }
        fn emit<'b>(&mut self, _now: Instant, buf: &'b mut [u8]) -> Option<(Frame<'b>, Verdict)> {
            let (h, ingress) = self.ready.pop()?;
            buf[256..256 + h.len()].copy_from_slice(&h);
            let mut f = Frame::new(buf, 256, h.len());
            if let Some(i) = ingress {
                f.set_ingress(i);
            }
            Swap.process(Instant::ZERO, &mut f);
            Some((f, Verdict::Transmit))
        }
    }

    #[test]
    fn frames_the_processor_emits_go_out_in_the_same_pass_from_free_frames() {
        let mut k = FakeKernel::new(4);
        let (port, mut kend) = k.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(8, 2048),
            vec![port],
            vec![Some(0)],
            Counted::new(HoldOne::default(), stats.clone()),
            stats.clone(),
            64,
        );
        w.step(Instant::ZERO);
        assert!(kend.receive(&w.umem, &pkt(1, 60)));
        assert_eq!(w.step(Instant::ZERO), 1);
        assert!(kend.transmit(&w.umem).is_empty(), "held, nothing to send");
        for round in 2..12u8 {
            assert!(kend.receive(&w.umem, &pkt(round, 60)));
            assert_eq!(w.step(Instant::ZERO), 1);
            // The frame held in the previous pass leaves in this one.
            let sent = kend.transmit(&w.umem);
            let mut want = pkt(round - 1, 60);
            for i in 0..6 {
                want.swap(i, i + 6);
            }
            assert_eq!(sent, [want]);
        }
        w.step(Instant::ZERO);
        // Conservation: the held frames went back at once, the emitted ones came back
        // from the tx ring.
        assert_eq!(w.free_frames(), 4);
        let s = stats.counters();
        assert_eq!(
            (s.rx, s.tx),
            (11, 10),
            "emitted frames count as sent, not received"
        );
    }

    #[test]
    fn full_tx_ring_drops_and_counts() {
        let mut k = FakeKernel::new(2);
        let (port, mut kend) = k.split();
        let stats = Arc::new(WorkerStats::new(0));
        let mut w = Worker::new(
            Umem::heap(16, 2048),
            vec![port],
            vec![Some(0)],
            Counted::new(Swap, stats.clone()),
            stats.clone(),
            64,
        );
        w.step(Instant::ZERO);
        assert!(kend.receive(&w.umem, &pkt(1, 20)));
        assert!(kend.receive(&w.umem, &pkt(2, 20)));
        w.step(Instant::ZERO);
        // The kernel has not sent anything: the tx ring (2 slots) is full.
        assert!(kend.receive(&w.umem, &pkt(3, 20)));
        w.step(Instant::ZERO);
        let s = stats.counters();
        assert_eq!((s.tx, s.tx_ring_full), (3, 1));
        assert_eq!(
            s.drops,
            [0; DropReason::COUNT],
            "a full ring is no drop reason"
        );
        assert_eq!(kend.transmit(&w.umem).len(), 2);
    }
}
