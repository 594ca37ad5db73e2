//! The process's allocator: the system's (glibc's malloc), with a cache of freed blocks per
//! thread in front of it.
//!
//! glibc keeps 7 freed blocks per size in each thread's cache, and none above 1 KiB. A worker
//! with 64 requests in flight frees and makes far more than 7 blocks of each size between two
//! turns of any one request, and each request makes two blocks above 1 KiB (hyper's read
//! buffer, 8 KiB, and the request's future); past its cache every malloc and free walks the
//! allocator's bins, at about 200 instructions each (a profile of a proxied request: 4,300
//! instructions in malloc and free for 15 allocations). Here freed blocks of up to 16 KiB go
//! onto a per-thread list by size class, up to [`PER_CLASS`] blocks and [`BUDGET`] bytes a
//! thread, and the next allocation of that class takes one back. What does not fit goes back to
//! the system; a thread's lists are given back when the thread ends.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks above this size, or aligned beyond [`ALIGN`], are the system's alone.
const MAX: usize = 16 * 1024;
/// malloc's own alignment on 64-bit Linux: every block it returns is aligned so.
const ALIGN: usize = 16;
/// Classes of 16 bytes up to 1 KiB (malloc's own granularity there), then of 256 bytes.
const SMALL: usize = 1024;
const SMALL_STEP: usize = 16;
const LARGE_STEP: usize = 256;
const CLASSES: usize = SMALL / SMALL_STEP + (MAX - SMALL) / LARGE_STEP;
/// At most this many freed blocks of one class wait on a thread's list.
const PER_CLASS: u32 = 256;
/// At most this many bytes of freed blocks wait on a thread's lists.
const BUDGET: usize = 2 * 1024 * 1024;

/// The class of a block of `size` bytes (1..=MAX), and the size every block of it has.
fn class(size: usize) -> (usize, usize) {
    if size <= SMALL {
        let c = size.div_ceil(SMALL_STEP);
        (c - 1, c * SMALL_STEP)
    } else {
        let c = (size - SMALL).div_ceil(LARGE_STEP);
        (SMALL / SMALL_STEP + c - 1, SMALL + c * LARGE_STEP)
    }
}

/// Whether blocks of `layout` go through the lists.
fn cached(layout: &Layout) -> bool {
    layout.size() <= MAX && layout.align() <= ALIGN && layout.size() > 0
}

/// One thread's lists: each a chain through the first word of its free blocks.
struct Lists {
    heads: [*mut u8; CLASSES],
    counts: [u32; CLASSES],
    bytes: usize,
}

struct Cache(UnsafeCell<Lists>);

impl Drop for Cache {
    fn drop(&mut self) {
        let lists = self.0.get_mut();
        for c in 0..CLASSES {
            let mut p = lists.heads[c];
            while !p.is_null() {
                // SAFETY: every block on a list came from `System` and holds the next one's
                // address in its first word.
                unsafe {
                    let next = p.cast::<*mut u8>().read();
                    libc_free(p);
                    p = next;
                }
            }
            lists.heads[c] = ptr::null_mut();
            lists.counts[c] = 0;
        }
        lists.bytes = 0;
    }
}

thread_local! {
    static CACHE: Cache = const {
        Cache(UnsafeCell::new(Lists {
            heads: [ptr::null_mut(); CLASSES],
            counts: [0; CLASSES],
            bytes: 0,
        }))
    };
}

/// Gives a block back to the system. A block's size does not matter to free(), so a block
/// made for a class is given back like any other.
unsafe fn libc_free(p: *mut u8) {
    // SAFETY: `p` came from `System.alloc` with an alignment of at most `ALIGN`, which
    // `System` serves with malloc; `System.dealloc` frees it with free() whatever the size.
    unsafe { System.dealloc(p, Layout::from_size_align_unchecked(1, 1)) }
}

pub struct Allocator;

// SAFETY: blocks are the system's; a block on a list is owned by that list alone (the list is
// the current thread's, reached through a thread-local that nothing else borrows while an
// allocation runs), and a block handed out is at least as large and as aligned as asked.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cached(&layout) {
            return unsafe { System.alloc(layout) };
        }
        let (c, size) = class(layout.size());
        let taken = CACHE
            .try_with(|cache| {
                // SAFETY: see the impl's comment; no allocation happens while `lists` is held.
                let lists = unsafe { &mut *cache.0.get() };
                let p = lists.heads[c];
                if p.is_null() {
                    return p;
                }
                // SAFETY: a listed block holds the next one's address in its first word.
                lists.heads[c] = unsafe { p.cast::<*mut u8>().read() };
                lists.counts[c] -= 1;
                lists.bytes -= size;
                p
            })
            .unwrap_or(ptr::null_mut());
        if !taken.is_null() {
            return taken;
        }
        // SAFETY: `size` is at least `layout.size()` and not zero; `ALIGN` is a power of two.
        unsafe { System.alloc(Layout::from_size_align_unchecked(size, ALIGN)) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !cached(&layout) {
            return unsafe { System.dealloc(p, layout) };
        }
        let (c, size) = class(layout.size());
        let kept = CACHE
            .try_with(|cache| {
                // SAFETY: as in `alloc`.
                let lists = unsafe { &mut *cache.0.get() };
                if lists.counts[c] >= PER_CLASS || lists.bytes + size > BUDGET {
                    return false;
                }
                // SAFETY: the block is at least 16 bytes long and 16-aligned (a class size),
                // and it is ours from here on.
                unsafe { p.cast::<*mut u8>().write(lists.heads[c]) };
                lists.heads[c] = p;
                lists.counts[c] += 1;
                lists.bytes += size;
                true
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: `p` came from `System.alloc` (here or in `alloc`).
            unsafe { libc_free(p) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cached(&layout) {
            // calloc: large zeroed blocks come from fresh pages, which need no writing (and
            // stay out of the resident set until used).
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: `alloc` returns a block of at least `layout.size()` bytes, or null.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (cached(&layout), cached(&new_layout)) {
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            (true, true) if class(layout.size()).0 == class(new_size).0 => p,
            _ => {
                // SAFETY: a new block, the contents copied, the old one freed: what realloc
                // does, by the rules of each side.
                unsafe {
                    let q = self.alloc(new_layout);
                    if !q.is_null() {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_room() {
        let mut last = 0;
        for size in 1..=MAX {
            let (c, room) = class(size);
            assert!(room >= size && room % ALIGN == 0, "{size}: {room}");
            assert!(c < CLASSES, "{size}: class {c}");
            assert!(c == last || c == last + 1, "{size}: class {c} after {last}");
            last = c;
        }
        assert_eq!(last, CLASSES - 1);
    }

    #[test]
    fn blocks_keep_their_bytes_through_reuse_growth_and_other_threads() {
        // The process allocates through `Allocator` (main.rs); this exercises it directly
        // too, with sizes around every boundary and blocks freed on another thread.
        let a = Allocator;
        let sizes = [
            1, 15, 16, 17, 1000, 1024, 1025, 5352, 8192, 16383, 16384, 16385, 70000,
        ];
        let mut blocks = Vec::new();
        for round in 0..3u8 {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % 8, 0);
                unsafe { ptr::write_bytes(p, round ^ (size as u8), size) };
                blocks.push((p as usize, size, round ^ (size as u8)));
            }
        }
        // Grown and shrunk, in and out of the lists' range: the bytes that remain are kept.
        let grown: Vec<(usize, usize, u8)> = blocks
            .into_iter()
            .map(|(p, size, fill)| {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let new = if size % 2 == 0 {
                    size * 3
                } else {
                    size.div_ceil(2)
                };
                let q = unsafe { a.realloc(p as *mut u8, layout, new) };
                assert!(!q.is_null());
                let kept = size.min(new);
                let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                assert!(bytes.iter().all(|&b| b == fill), "{size} -> {new}");
                unsafe { ptr::write_bytes(q, fill, new) };
                (q as usize, new, fill)
            })
            .collect();
        // Freed on another thread, whose lists take them and give them back at its end.
        std::thread::spawn(move || {
            for (p, size, fill) in grown {
                let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
                assert!(bytes.iter().all(|&b| b == fill));
                unsafe {
                    Allocator.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap())
                };
            }
            // Reused on that thread: a block taken back from a list is whole.
            for &size in &sizes {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let p = unsafe { Allocator.alloc(layout) };
                unsafe { ptr::write_bytes(p, 0xA5, size) };
                unsafe { Allocator.dealloc(p, layout) };
            }
        })
        .join()
        .unwrap();
        // Zeroed blocks are zero, a reused one too.
        for size in [64, 8192, 1 << 20] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let p = unsafe { a.alloc(layout) };
            unsafe { ptr::write_bytes(p, 0xFF, size) };
            unsafe { a.dealloc(p, layout) };
            let z = unsafe { a.alloc_zeroed(layout) };
            let bytes = unsafe { std::slice::from_raw_parts(z, size) };
            assert!(bytes.iter().all(|&b| b == 0), "{size}");
            unsafe { a.dealloc(z, layout) };
        }
        // Alignments beyond malloc's are the system's, and still honoured.
        let layout = Layout::from_size_align(100, 64).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert_eq!(p as usize % 64, 0);
        unsafe { a.dealloc(p, layout) };
    }

    #[test]
    fn a_thread_keeps_no_more_than_its_budget() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(MAX, 8).unwrap();
            let blocks: Vec<usize> = (0..PER_CLASS as usize + 50)
                .map(|_| unsafe { Allocator.alloc(layout) } as usize)
                .collect();
            for p in blocks {
                unsafe { Allocator.dealloc(p as *mut u8, layout) };
            }
            let (bytes, count) = CACHE.with(|c| {
                let lists = unsafe { &*c.0.get() };
                (lists.bytes, lists.counts[class(MAX).0])
            });
            assert!(bytes <= BUDGET, "{bytes}");
            // The thread's own small blocks may take a little of the budget.
            assert!(
                (BUDGET / MAX - 2..=BUDGET / MAX).contains(&(count as usize)),
                "{count}"
            );
        })
        .join()
        .unwrap();
    }
}
