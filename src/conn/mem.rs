//! The connection table's big arrays (entries, side entries, index buckets): anonymous
//! mappings straight from the system, so they come zeroed, page-aligned, and resident only
//! once written (or when asked for at once), and with transparent huge pages asked for
//! (`MADV_HUGEPAGE`) before any page is touched: 2 MiB pages instead of 4 KiB ones, so the
//! random accesses of lookups over a table of gigabytes miss the TLB far less often.

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for types made of atomic integers (and arrays and `repr(C)` structs of
/// them), for which zero bytes are the value `Default` gives.
pub(crate) unsafe trait Zeroable {}

/// Asking for transparent huge pages is worth it from one huge page up.
const HUGE_PAGE: usize = 2 << 20;

/// When a [`zeroed_slice`]'s pages become resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pages {
    /// At once (`MADV_POPULATE_WRITE`), so that nothing faults later on the packet path;
    /// on a kernel without it (before 5.14), as they are first written.
    Now,
    /// As they are first written: what is never used is never resident.
    OnFirstWrite,
}

/// `n` values of `T`, all zero, in an anonymous mapping of their own; dereferences to
/// `[T]` and unmaps on drop.
pub(crate) struct Zeroed<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: a `Zeroed<T>` owns its values as a `Box<[T]>` does, and hands out only shared
// references to them, so it may move to and be shared between threads exactly when `T`
// may.
unsafe impl<T: Zeroable + Send> Send for Zeroed<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Zeroable + Sync> Sync for Zeroed<T> {}

impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is aligned and valid for `len` values for as long as `self` lives
        // (mapped in `zeroed_slice`, unmapped only in `drop`), every one initialized (zero
        // bytes are a valid `T`), and no `&mut` to them is ever made.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        let bytes = std::mem::size_of_val::<[T]>(&**self);
        if bytes != 0 {
            // SAFETY: `ptr` and `bytes` are exactly the mapping `zeroed_slice` made, which
            // nothing else unmaps; `T` needs no drop (atomic integers), and no reference
            // to the values outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
        }
    }
}

/// `n` values of `T`, all zero, in pages of their own that nothing has written yet,
/// advised huge from 2 MiB up, resident as `pages` says.
///
/// # Panics
/// If `n` values of `T` do not fit the address space; aborts (as the global allocator
/// does) if the system has no room for the mapping.
pub(crate) fn zeroed_slice<T: Zeroable>(n: usize, pages: Pages) -> Zeroed<T> {
    const { assert!(std::mem::align_of::<T>() <= 4096 && !std::mem::needs_drop::<T>()) };
    let layout = Layout::array::<T>(n).expect("table too large");
    if layout.size() == 0 {
        return Zeroed {
            ptr: NonNull::dangling(),
            len: n,
        };
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory; the result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        handle_alloc_error(layout);
    }
    if layout.size() >= HUGE_PAGE {
        // SAFETY: advice on the mapping just made, before any page of it is touched; it
        // changes page sizes, never contents. A kernel without transparent huge pages
        // refuses it (EINVAL) and the 4 KiB pages serve as before.
        unsafe { libc::madvise(p, layout.size(), libc::MADV_HUGEPAGE) };
    }
    if pages == Pages::Now {
        // SAFETY: faults in the pages of the mapping just made, as writing zeros would;
        // the contents stay zero. A kernel before 5.14 refuses it (EINVAL) and the pages
        // fault in as they are first written.
        unsafe { libc::madvise(p, layout.size(), libc::MADV_POPULATE_WRITE) };
    }
    Zeroed {
        // `mmap` succeeded, so `p` is not null (MAP_FIXED was not asked for) and is
        // page-aligned, which satisfies `T`'s alignment (checked above).
        ptr: NonNull::new(p.cast::<T>()).expect("mmap returned null"),
        len: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[repr(C, align(64))]
    struct Line([AtomicU64; 8]);
    // SAFETY: only atomic integers.
    unsafe impl Zeroable for Line {}

    /// Pages of `s`, a whole mapping of `zeroed_slice`: resident ones (`mincore`) and all.
    fn resident(s: &[Line]) -> (usize, usize) {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let bytes = std::mem::size_of_val(s);
        let mut v = vec![0u8; bytes.div_ceil(page)];
        // SAFETY: `s` starts a mapping (page-aligned) at least `bytes` long, and `v` has a
        // byte for each of its pages; mincore only writes `v`.
        let r = unsafe { libc::mincore(s.as_ptr() as *mut libc::c_void, bytes, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        (v.iter().filter(|b| **b & 1 != 0).count(), v.len())
    }

    #[test]
    fn pages_now_are_resident_before_any_write() {
        // 4 MiB (advised huge as well) and 64 KiB.
        for n in [1 << 16, 1000] {
            let s = zeroed_slice::<Line>(n, Pages::Now);
            let (resident, all) = resident(&s);
            assert_eq!(resident, all, "{n} lines");
        }
    }

    #[test]
    fn zeroed_aligned_and_writable() {
        for (n, pages) in [
            (0, Pages::Now),
            (1, Pages::OnFirstWrite),
            (1000, Pages::Now),
            (40_000, Pages::OnFirstWrite),
        ] {
            let s = zeroed_slice::<Line>(n, pages);
            assert_eq!(s.len(), n);
            assert_eq!(s.as_ptr() as usize % 64, 0);
            assert!(s
                .iter()
                .all(|l| l.0.iter().all(|w| w.load(Ordering::Relaxed) == 0)));
            for (i, l) in s.iter().enumerate() {
                l.0[i % 8].store(i as u64 + 1, Ordering::Relaxed);
            }
            for (i, l) in s.iter().enumerate() {
                assert_eq!(l.0[i % 8].load(Ordering::Relaxed), i as u64 + 1);
            }
        }
    }
}
