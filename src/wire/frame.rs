//! A received frame inside its buffer, with room to grow at the front.

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

    /// Grows the frame `n` bytes into its headroom to make room for a header after its
    /// first `at` bytes (the link header): those move `n` bytes to the front, and bytes
    /// `at..at + n` of the grown frame are left for the caller to write (they hold whatever
    /// was there). The one place a frame grows at the front: tunnel encapsulation and ICMP
    /// errors go through it.
    ///
    /// Returns false, changing nothing, when the headroom is shorter than `n` or `at` is
    /// past the frame's end.
    #[inline]
    pub fn prepend(&mut self, at: usize, n: usize) -> bool {
        if n > self.head || at > self.len {
            return false;
        }
        let head = self.head - n;
        self.buf.copy_within(self.head..self.head + at, head);
        self.head = head;
        self.len += n;
        true
    }

    /// Shortens the frame to its first `len` bytes (nothing changes if it is not longer):
    /// drops Ethernet padding, or cuts a packet down to what an ICMP error quotes.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_track_head_and_tail_room() {
        let mut buf = [0u8; 64];
        let f = Frame::new(&mut buf, 16, 32);
        assert_eq!((f.headroom(), f.tailroom(), f.len()), (16, 16, 32));
    }

    #[test]
    fn prepend_moves_the_link_header_and_opens_a_gap() {
        let mut buf: Vec<u8> = (0..32).collect();
        let mut f = Frame::new(&mut buf, 8, 20);
        assert!(!f.prepend(2, 9), "8 bytes of headroom");
        assert!(!f.prepend(21, 4), "past the end");
        assert_eq!((f.head(), f.len()), (8, 20));
        assert!(f.prepend(2, 4));
        assert_eq!((f.head(), f.len(), f.tailroom()), (4, 24, 4));
        assert_eq!(
            &f.data()[..2],
            &[8, 9],
            "the link header moved to the front"
        );
        let rest: Vec<u8> = (10..28).collect();
        assert_eq!(&f.data()[6..], &rest[..], "the packet stayed where it was");
        f.truncate(10);
        assert_eq!(f.len(), 10);
        f.truncate(50);
        assert_eq!((f.len(), f.tailroom()), (10, 18));
    }

    #[test]
    #[should_panic]
    fn frame_outside_buffer_panics() {
        let mut buf = [0u8; 8];
        let _ = Frame::new(&mut buf, 4, 8);
    }
}
