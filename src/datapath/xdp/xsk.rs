//! A standalone AF_XDP socket with a UMEM of its own, and the sink program that feeds it:
//! the I/O of tools that make or swallow traffic (`pktgen`), on the same sockets, rings and
//! UMEM code as the datapath's workers.
//!
//! ```text
//!   transmit:  free frames --write--> tx ring --kick--> kernel --> completion ring --> free
//!   receive:   free frames --> fill ring --> kernel --> rx ring --read--> fill ring
//! ```
//!
//! One [`Xsk`] is one socket on one (interface, queue); it is driven by one thread.

use std::io;
use std::os::fd::RawFd;

use aya::maps::{MapData, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use super::filter::{ifindex, FilterError, XdpMode};
use super::socket::{self, BindFlags, Desc, Port, RingSizes};
use super::umem::Umem;

/// The compiled sink program (`bpf/xdp_sink.c`), 8-byte aligned for the ELF parser.
static SINK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_sink.o"));

/// Rx queues the sink program serves (MAX_QUEUES in the C source).
pub const SINK_MAX_QUEUES: u32 = 64;

/// Most tx kicks per [`Xsk::send`]: copy-mode `sendto` moves a bounded number of frames
/// per call, so a full batch may need several.
const MAX_TX_KICKS: usize = 16;

/// How to open an [`Xsk`].
#[derive(Clone, Debug)]
pub struct XskConfig {
    /// Interface.
    pub iface: String,
    /// Queue of the interface.
    pub queue: u32,
    /// UMEM frames (the frames in flight at most).
    pub frames: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Size of each of the four rings, a power of two.
    pub ring_size: u32,
    /// Use the need_wakeup flags (kick only when the kernel asks).
    pub need_wakeup: bool,
}

impl XskConfig {
    /// Defaults for `iface`/`queue`: 4096 frames of 2048 bytes, rings of 2048.
    pub fn new(iface: &str, queue: u32) -> XskConfig {
        XskConfig {
            iface: iface.to_string(),
            queue,
            frames: 4096,
            frame_size: 2048,
            ring_size: 2048,
            need_wakeup: true,
        }
    }
}

/// Counters of one [`Xsk`], plain numbers kept by its owning thread.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames put on the tx ring.
    pub tx: u64,
    /// Transmissions the kernel completed.
    pub completed: u64,
    /// Frames read from the rx ring.
    pub rx: u64,
    /// Wakeup syscalls.
    pub kicks: u64,
    /// Sends cut short because no frame or tx slot was free.
    pub tx_full: u64,
}

/// One AF_XDP socket on one (interface, queue) with its own UMEM.
#[derive(Debug)]
pub struct Xsk {
    // Field order: the socket closes before its UMEM is unmapped.
    port: Port,
    umem: Umem,
    /// Frames owned by user space and idle.
    free: Vec<u64>,
    counters: XskCounters,
    need_wakeup: bool,
}

fn io_other(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl Xsk {
    /// Opens the socket (copy mode; veth has no zero-copy). Every frame starts out free;
    /// call [`Xsk::fill_all`] to receive.
    pub fn open(cfg: &XskConfig) -> io::Result<Xsk> {
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(io_other("frame size", "2048 or 4096"));
        }
        if !cfg.ring_size.is_power_of_two() || cfg.frames == 0 {
            return Err(io_other("ring size", "a power of two, and frames > 0"));
        }
        let ifx = ifindex(&cfg.iface).ok_or_else(|| io_other("no such interface", &cfg.iface))?;
        let umem = Umem::map(cfg.frames, cfg.frame_size)?;
        let sizes = RingSizes {
            rx: cfg.ring_size,
            tx: cfg.ring_size,
            fill: cfg.ring_size,
            comp: cfg.ring_size,
        };
        let flags = BindFlags {
            zero_copy: false,
            need_wakeup: cfg.need_wakeup,
            busy_poll: None,
        };
        let port = socket::open(&umem, ifx, cfg.queue, None, sizes, flags)?;
        let fs = u64::from(cfg.frame_size);
        let free = (0..u64::from(cfg.frames)).rev().map(|i| i * fs).collect();
        Ok(Xsk {
            port,
            umem,
            free,
            counters: XskCounters::default(),
            need_wakeup: cfg.need_wakeup,
        })
    }

    /// The socket's descriptor, for an XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.port.raw_fd().expect("an opened Xsk has a socket")
    }

    /// The queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.port.queue
    }

    /// The counters so far.
    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Frames idle in user space.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Calls `f` on every idle frame (whole frames), to stamp templates before sending.
    pub fn for_each_free_frame(&mut self, mut f: impl FnMut(&mut [u8])) {
        for &base in &self.free {
            // SAFETY: frames on the free stack are in no kernel ring and no other slice of
            // them is alive; the slice ends with this iteration.
            f(unsafe { self.umem.frame_mut(base) });
        }
    }

    /// Takes back the frames whose transmission the kernel completed.
    pub fn reclaim(&mut self) -> u32 {
        let mut n = 0;
        while let Some(addr) = self.port.comp.pop() {
            self.free.push(self.umem.frame_base(addr));
            n += 1;
        }
        if n > 0 {
            self.port.comp.release();
            self.counters.completed += u64::from(n);
        }
        n
    }

    /// Sends up to `max` frames of `len` bytes: each idle frame is handed to `write` (its
    /// first `len` bytes, holding whatever the frame held before: templates stay in
    /// place), queued, and the kernel is kicked. Returns the number queued, fewer when
    /// frames or tx slots run out.
    pub fn send(&mut self, max: u32, len: u32, mut write: impl FnMut(&mut [u8])) -> u32 {
        self.reclaim();
        let want = max.min(self.free.len() as u32);
        let n = self.port.tx.free(want).min(want);
        for _ in 0..n {
            let base = self.free.pop().expect("counted above");
            // SAFETY: the frame came off the free stack: the kernel holds it in no ring;
            // the slice ends before the descriptor is published.
            let frame = unsafe { self.umem.frame_mut(base) };
            write(&mut frame[..len as usize]);
            let pushed = self.port.tx.push(Desc {
                addr: base,
                len,
                options: 0,
            });
            debug_assert!(pushed, "tx slots counted above");
        }
        if n < max {
            self.counters.tx_full += 1;
        }
        if n > 0 {
            self.port.tx.commit();
            self.counters.tx += u64::from(n);
        }
        self.kick_tx();
        n
    }

    /// Kicks the kernel while the tx ring holds frames and each kick makes progress.
    pub fn kick_tx(&mut self) {
        for _ in 0..MAX_TX_KICKS {
            let pending = self.port.tx.outstanding();
            if pending == 0 || (self.need_wakeup && !self.port.tx.needs_wakeup()) {
                return;
            }
            self.port.kick_tx();
            self.counters.kicks += 1;
            if self.port.tx.outstanding() == pending {
                return;
            }
        }
    }

    /// Frames on the tx ring the kernel has not taken yet: a generator that stamps send
    /// times keeps this shallow, or the stamps include the wait in the ring.
    pub fn tx_pending(&mut self) -> u32 {
        self.port.tx.outstanding()
    }

    /// Frames on the tx ring not yet taken by the kernel, or taken and not yet completed.
    pub fn tx_in_flight(&mut self) -> u32 {
        self.reclaim();
        let total = self.umem.frames() as usize;
        (total - self.free.len()) as u32
    }

    /// Hands every idle frame to the kernel's fill ring (as many as it holds).
    pub fn fill_all(&mut self) {
        let n = self.port.fill.free(self.free.len() as u32);
        for _ in 0..n.min(self.free.len() as u32) {
            let base = self.free.pop().expect("counted above");
            let pushed = self.port.fill.push(base);
            debug_assert!(pushed, "fill slots counted above");
        }
        self.port.fill.commit();
    }

    /// Reads up to `max` received frames, handing each one's bytes to `read`, and gives
    /// their frames straight back to the fill ring. Returns the number read.
    pub fn recv(&mut self, max: u32, mut read: impl FnMut(&[u8])) -> u32 {
        let mut n = 0;
        while n < max {
            let Some(d) = self.port.rx.pop() else { break };
            let base = self.umem.frame_base(d.addr);
            let off = (d.addr - base) as usize;
            // SAFETY: the kernel handed this frame over on the rx ring and holds it in no
            // other ring until we put it on the fill ring below, after the slice is gone.
            let frame = unsafe { self.umem.frame_mut(base) };
            let end = (off + d.len as usize).min(frame.len());
            read(&frame[off..end]);
            // The fill ring is as large as the UMEM's share given to it, so a frame that
            // came out of it always has a slot to go back to.
            if !self.port.fill.push(base) {
                self.free.push(base);
            }
            n += 1;
        }
        if n > 0 {
            self.port.rx.release();
            self.port.fill.commit();
            self.counters.rx += u64::from(n);
        }
        if !self.need_wakeup || self.port.fill.needs_wakeup() {
            self.port.kick_rx();
            self.counters.kicks += 1;
        }
        n
    }

    /// Sleeps in `poll` until the rx ring has frames or `timeout_ms` passes.
    pub fn wait_rx(&self, timeout_ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call's duration.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }
}

/// The sink program (`bpf/xdp_sink.c`) attached to one interface: every frame it receives
/// goes to the [`Xsk`] registered for its rx queue. Detached when dropped.
pub struct SinkProgram {
    xsks: XskMap<MapData>,
    mode: XdpMode,
    // Dropped last: closing the object detaches the program.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for SinkProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkProgram")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SinkProgram {
    /// Loads the program and attaches it to `iface` (in [`XdpMode::Auto`], native first,
    /// generic when the driver refuses).
    pub fn attach(iface: &str, mode: XdpMode) -> Result<SinkProgram, FilterError> {
        let load = |e: &dyn std::fmt::Display| FilterError::Load(e.to_string());
        let ifx = ifindex(iface).ok_or_else(|| FilterError::NoInterface(iface.into()))?;
        let mut ebpf = Ebpf::load(SINK_OBJ).map_err(|e| load(&e))?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_sink")
            .ok_or_else(|| load(&"program xdp_sink missing"))?
            .try_into()
            .map_err(|e| load(&e))?;
        prog.load().map_err(|e| load(&e))?;
        let tries: &[(XdpMode, XdpFlags)] = match mode {
            XdpMode::Auto => &[
                (XdpMode::Native, XdpFlags::DRV_MODE),
                (XdpMode::Generic, XdpFlags::SKB_MODE),
            ],
            XdpMode::Native => &[(XdpMode::Native, XdpFlags::DRV_MODE)],
            XdpMode::Generic => &[(XdpMode::Generic, XdpFlags::SKB_MODE)],
        };
        let mut attached = None;
        let mut last = String::new();
        for (m, flags) in tries {
            match prog.attach_to_if_index(ifx, *flags) {
                Ok(_) => {
                    attached = Some(*m);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let Some(mode) = attached else {
            return Err(FilterError::Attach {
                iface: iface.to_string(),
                mode: tries.last().expect("non-empty").0,
                reason: last,
            });
        };
        let map = ebpf
            .take_map("xsks")
            .ok_or_else(|| load(&"map xsks missing"))?;
        let xsks = XskMap::try_from(map).map_err(|e| load(&e))?;
        Ok(SinkProgram {
            xsks,
            mode,
            _ebpf: ebpf,
        })
    }

    /// The mode the program was attached in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Sends frames received on `xsk`'s queue to `xsk`.
    pub fn register(&mut self, xsk: &Xsk) -> Result<(), FilterError> {
        let q = xsk.queue();
        if q >= SINK_MAX_QUEUES {
            return Err(FilterError::NoSlot {
                ifindex: 0,
                queue: q,
            });
        }
        self.xsks
            .set(q, xsk.fd(), 0)
            .map_err(|e| FilterError::Load(format!("xsks: {e}")))
    }
}
