//! The hold pool: later fragments that arrived before their first one, copied aside until
//! the first one is forwarded (then they are sent the same way) or for at most
//! [`HOLD_TIMEOUT`] (then they are dropped as `fragment_no_first`).
//!
//! [`HOLD_FRAMES`] buffers of [`HOLD_FRAME_BYTES`] each per worker, allocated once with
//! the pipeline: holding a fragment is a copy of its bytes, never an allocation, and the
//! received frame goes back to the ring at once (why a copy and not the frame itself: see
//! `docs/decisions.md`, "Fragments"). A fragment that finds the pool full, or that is too
//! long for a buffer, is not held.

use std::time::Duration;

use super::FragKey;

/// Fragments one worker holds at a time.
pub const HOLD_FRAMES: usize = 64;
/// Longest frame the pool holds: what a 2048-byte UMEM frame holds after the kernel's
/// 256 bytes of headroom (a full 1500-byte IP packet with Ethernet and a VLAN tag fits).
pub const HOLD_FRAME_BYTES: usize = 1792;
/// How long a held fragment waits for its first one.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a held fragment stands.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
enum State {
    /// The buffer is free.
    #[default]
    Free,
    /// Waiting for the first fragment of its datagram.
    Waiting,
    /// Its first fragment went out along the flow of `ports`: to be sent ([`HoldPool::next_ready`]).
    Ready,
}

/// One held fragment's bookkeeping (its bytes are in [`HoldPool::bytes`]).
#[derive(Copy, Clone, Debug, Default)]
struct Slot {
    state: State,
    key: FragKey,
    /// Microseconds of the clock when a waiting fragment is given up.
    expires: u64,
    len: u16,
    ingress: Option<u16>,
    /// The flow's ports, from the first fragment, once released.
    ports: (u16, u16),
}

/// A released fragment, as [`HoldPool::next_ready`] hands it out.
pub(super) struct Released<'a> {
    pub(super) key: FragKey,
    pub(super) bytes: &'a [u8],
    pub(super) ingress: Option<u16>,
    pub(super) ports: (u16, u16),
}

/// A fixed pool of held fragments, one per worker.
pub(in crate::datapath::pipeline) struct HoldPool {
    slots: [Slot; HOLD_FRAMES],
    /// `HOLD_FRAMES` buffers of `HOLD_FRAME_BYTES`, one after the other.
    bytes: Box<[u8]>,
    /// Slots released, in the order they were released: a ring of `ready_len` indexes
    /// from `ready_head`.
    ready: [u8; HOLD_FRAMES],
    ready_head: usize,
    ready_len: usize,
    /// Slots `Waiting`.
    waiting: usize,
}

/// Why a fragment was not held.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct NoRoom;

impl HoldPool {
    pub(in crate::datapath::pipeline) fn new() -> HoldPool {
        HoldPool {
            slots: [Slot::default(); HOLD_FRAMES],
            bytes: vec![0; HOLD_FRAMES * HOLD_FRAME_BYTES].into_boxed_slice(),
            ready: [0; HOLD_FRAMES],
            ready_head: 0,
            ready_len: 0,
            waiting: 0,
        }
    }

    /// Copies `frame` (a later fragment of datagram `key`) into a free buffer until `expires`
    /// (microseconds of the clock).
    pub(super) fn hold(
        &mut self,
        key: FragKey,
        frame: &[u8],
        ingress: Option<u16>,
        expires: u64,
    ) -> Result<(), NoRoom> {
        if frame.len() > HOLD_FRAME_BYTES {
            return Err(NoRoom);
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.state == State::Free)
            .ok_or(NoRoom)?;
        self.bytes[i * HOLD_FRAME_BYTES..][..frame.len()].copy_from_slice(frame);
        self.slots[i] = Slot {
            state: State::Waiting,
            key,
            expires,
            len: frame.len() as u16,
            ingress,
            ports: (0, 0),
        };
        self.waiting += 1;
        Ok(())
    }

    /// The first fragment of `key` went out along the flow of `ports`: its held fragments
    /// are ready to follow. Returns how many there were.
    pub(super) fn release(&mut self, key: &FragKey, ports: (u16, u16)) -> u64 {
        if self.waiting == 0 {
            return 0;
        }
        let mut n = 0;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.state == State::Waiting && s.key == *key {
                s.state = State::Ready;
                s.ports = ports;
                self.waiting -= 1;
                self.ready[(self.ready_head + self.ready_len) % HOLD_FRAMES] = i as u8;
                self.ready_len += 1;
                n += 1;
            }
        }
        n
    }

    /// Frees the waiting fragments whose time is up (`now` in microseconds); returns how
    /// many.
    pub(super) fn expire(&mut self, now: u64) -> u64 {
        if self.waiting == 0 {
            return 0;
        }
        let mut n = 0;
        for s in &mut self.slots {
            if s.state == State::Waiting && s.expires <= now {
                s.state = State::Free;
                self.waiting -= 1;
                n += 1;
            }
        }
        n
    }

    /// Whether a released fragment waits to be sent.
    #[inline]
    pub(super) fn has_ready(&self) -> bool {
        self.ready_len != 0
    }

    /// Takes the fragment released first and frees its buffer; the bytes stay readable
    /// until the pool is next changed.
    pub(super) fn next_ready(&mut self) -> Option<Released<'_>> {
        if self.ready_len == 0 {
            return None;
        }
        let i = usize::from(self.ready[self.ready_head]);
        self.ready_head = (self.ready_head + 1) % HOLD_FRAMES;
        self.ready_len -= 1;
        let s = &mut self.slots[i];
        debug_assert_eq!(s.state, State::Ready);
        s.state = State::Free;
        Some(Released {
            key: s.key,
            bytes: &self.bytes[i * HOLD_FRAME_BYTES..][..usize::from(s.len)],
            ingress: s.ingress,
            ports: s.ports,
        })
    }

    /// Fragments held (waiting or ready), for tests.
    #[cfg(test)]
    pub(super) fn in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.state != State::Free).count()
    }
}
