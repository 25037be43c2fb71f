//! The UMEM: one contiguous area of equal frames shared by a queue's sockets and the
//! kernel. Frames are named by their byte offset (`addr`) in the area.

use std::io;
use std::ptr::NonNull;

/// A page-aligned memory area cut into `frame_size` frames.
#[derive(Debug)]
pub(crate) struct Umem {
    ptr: NonNull<u8>,
    len: usize,
    frame_size: u32,
    /// Whether `ptr` came from `mmap` (else from a test's heap allocation, owned here).
    mapped: bool,
}

// SAFETY: the area is owned by this value; frames are handed between the kernel and one
// worker thread through the rings, never shared between threads by this type.
unsafe impl Send for Umem {}

impl Umem {
    /// Maps `frames * frame_size` bytes of anonymous memory, populated up front so the
    /// first packets do not fault pages in.
    pub(crate) fn map(frames: u32, frame_size: u32) -> io::Result<Umem> {
        assert!(
            frame_size.is_power_of_two(),
            "aligned UMEM chunks are powers of two"
        );
        let len = frames as usize * frame_size as usize;
        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem {
            ptr: NonNull::new(p.cast()).expect("mmap does not return null on success"),
            len,
            frame_size,
            mapped: true,
        })
    }

    /// A heap-backed area for tests of the ring loop.
    #[cfg(test)]
    pub(crate) fn heap(frames: u32, frame_size: u32) -> Umem {
        let len = frames as usize * frame_size as usize;
        let b: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let ptr = NonNull::new(Box::into_raw(b).cast::<u8>()).expect("box is not null");
        Umem {
            ptr,
            len,
            frame_size,
            mapped: false,
        }
    }

    /// Start address of the area (for `XDP_UMEM_REG`).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the area in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Size of one frame.
    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of frames.
    pub(crate) fn frames(&self) -> u32 {
        (self.len / self.frame_size as usize) as u32
    }

    /// The frame that contains `addr` (aligned mode: the kernel may hand back any address
    /// inside a frame).
    #[inline]
    pub(crate) fn frame_base(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// The whole frame starting at `base`, writable.
    ///
    /// # Safety
    /// The caller must own the frame: it is in none of the kernel's rings (not in a fill or
    /// tx ring, not yet handed back) and no other slice of it is alive.
    ///
    /// # Panics
    /// If `base` is not a frame boundary inside the area.
    // The area is shared with the kernel and owned frame by frame, not through `&mut self`:
    // exclusivity comes from the ring protocol, stated in the safety contract.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn frame_mut(&self, base: u64) -> &mut [u8] {
        assert!(
            base % u64::from(self.frame_size) == 0 && (base as usize) < self.len,
            "frame address outside the UMEM"
        );
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(base as usize),
                self.frame_size as usize,
            )
        }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: unmaps exactly the mapping made in `map`; sockets using it are closed
            // first (they are dropped before the UMEM by field order in the worker).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        } else {
            // SAFETY: rebuilds the box leaked in `heap` with the same length.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.ptr.as_ptr(),
                    self.len,
                ))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_base_masks_offsets_inside_a_frame() {
        let u = Umem::heap(4, 2048);
        assert_eq!(u.frames(), 4);
        assert_eq!(u.frame_base(2048 + 256), 2048);
        assert_eq!(u.frame_base(3 * 2048 + 2047), 3 * 2048);
        // SAFETY: the test owns every frame.
        let f = unsafe { u.frame_mut(2048) };
        assert_eq!(f.len(), 2048);
    }

    #[test]
    #[should_panic]
    fn frame_outside_the_area_panics() {
        let u = Umem::heap(2, 2048);
        // SAFETY: the test owns every frame; the call panics before any access.
        let _ = unsafe { u.frame_mut(4096) };
    }
}
