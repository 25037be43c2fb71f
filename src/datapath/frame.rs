//! A received frame inside its buffer, with room to grow at the front.

use crate::stats::{DropReason, WorkerStats};

/// A frame in a buffer: `buf[head..head + len]` holds the bytes, `buf[..head]` is headroom.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
    egress: Option<u16>,
    ingress: Option<u16>,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes at offset `head` of `buf`.
    ///
    /// # Panics
    /// If `head + len` exceeds the buffer.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Frame<'a> {
        assert!(head + len <= buf.len(), "frame outside its buffer");
        Frame {
            buf,
            head,
            len,
            egress: None,
            ingress: None,
        }
    }

    /// The interface the frame came in on, an index into the backend's interface list
    /// (`--iface` order); `None` where the backend does not say (replay).
    #[inline]
    pub fn ingress(&self) -> Option<u16> {
        self.ingress
    }

    /// Records the interface the frame came in on (see [`Frame::ingress`]).
    #[inline]
    pub fn set_ingress(&mut self, iface: u16) {
        self.ingress = Some(iface);
    }

    /// The interface the processor chose for a transmitted frame: an index into the
    /// backend's interface list (`--iface` order). `None` leaves the choice to the backend.
    #[inline]
    pub fn egress(&self) -> Option<u16> {
        self.egress
    }

    /// Chooses the interface a transmitted frame leaves by (see [`Frame::egress`]).
    #[inline]
    pub fn set_egress(&mut self, port: u16) {
        self.egress = Some(port);
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    /// Offset of the first byte in the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Bytes free behind the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// The whole buffer and the frame's position in it, for rewrites that move bytes.
    #[inline]
    pub fn parts_mut(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.head, self.len)
    }

    /// Moves the frame's boundaries inside the buffer (after a rewrite that grew or shrank
    /// it).
    ///
    /// # Panics
    /// If the new boundaries leave the buffer.
    #[inline]
    pub fn set_bounds(&mut self, head: usize, len: usize) {
        assert!(head + len <= self.buf.len(), "frame outside its buffer");
        self.head = head;
        self.len = len;
    }
}

/// What the backend does with a processed frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out.
    Transmit,
    /// Not fastlb's: the kernel should have it (the XDP filter passes such frames; a
    /// backend that already holds one counts it).
    Pass,
    /// Drop it, counted under the reason.
    Drop(DropReason),
}

impl Verdict {
    /// Counts a frame received and handled with this verdict: `rx`, and `tx`, `passed` or
    /// the drop's reason. The one place a processor counts its frames.
    #[inline]
    pub fn count(self, stats: &WorkerStats) {
        stats.rx.add(1);
        match self {
            Verdict::Transmit => stats.tx.add(1),
            Verdict::Pass => stats.passed.add(1),
            Verdict::Drop(reason) => stats.count_drop(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_track_head_and_tail_room() {
        let mut buf = [0u8; 64];
        let mut f = Frame::new(&mut buf, 16, 32);
        assert_eq!((f.headroom(), f.tailroom(), f.len()), (16, 16, 32));
        f.set_bounds(0, 48);
        assert_eq!((f.headroom(), f.tailroom()), (0, 16));
    }

    #[test]
    #[should_panic]
    fn frame_outside_buffer_panics() {
        let mut buf = [0u8; 8];
        let _ = Frame::new(&mut buf, 4, 8);
    }
}
