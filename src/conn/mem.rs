//! The connection table's big arrays (entries, side entries, index buckets): allocated
//! zeroed, so they come as fresh pages from the system that are not resident until written.

use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for types made of atomic integers (and arrays and `repr(C)` structs of
/// them), for which zero bytes are the value `Default` gives.
pub(crate) unsafe trait Zeroable {}

/// `n` values of `T`, all zero, in one allocation that nothing has written yet.
///
/// # Panics
/// If `n` values of `T` do not fit the address space.
pub(crate) fn zeroed_slice<T: Zeroable>(n: usize) -> Box<[T]> {
    let layout = Layout::array::<T>(n).expect("table too large");
    if layout.size() == 0 {
        return Vec::new().into_boxed_slice();
    }
    // SAFETY: the layout's size is not zero (checked above).
    let p = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation of the global allocator with the layout of `[T; n]`
    // (what dropping a `Box<[T]>` of `n` values frees), owned by nothing else; every byte
    // is zero, and all-zero bytes are a valid `T` (`Zeroable`'s contract), so all `n`
    // values are initialized.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) }
}
