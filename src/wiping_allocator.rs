//! A global allocator that zeroes every heap block as it is freed, so that no copy of a chat
//! (socket read buffers, parsed frames, rendered events, strings of every library on the
//! path) survives in freed memory where a later dump or an exploit could read it. The event
//! log wipes its own bytes explicitly; this catches every other copy.
//!
//! The blocks come from glibc's malloc, or from mimalloc when built with `--features mimalloc`
//! (faster under load, more memory per idle connection; see BENCHMARKS.md).
//!
//! `realloc` is left to the trait's default (allocate, copy, free), so a block that moves is
//! wiped too. Wiping can be switched off at run time, for measuring what it costs.

use std::alloc::{GlobalAlloc, Layout};

/// The allocator underneath: glibc's malloc, or mimalloc with the `mimalloc` feature.
#[cfg(feature = "mimalloc")]
use mimalloc::MiMalloc as System;
#[cfg(not(feature = "mimalloc"))]
use std::alloc::System;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct WipingAllocator;

/// On by default; benchmarks switch it off to measure the cost.
pub static WIPE_ON_FREE: AtomicBool = AtomicBool::new(true);

unsafe impl GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WIPE_ON_FREE.load(Ordering::Relaxed) {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes that we own until the
            // `System.dealloc` below.
            std::ptr::write_bytes(ptr, 0, layout.size());
            // Stores to memory about to be freed are dead to the optimiser; an empty asm
            // block that may read `ptr` keeps them.
            std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags));
        }
        System.dealloc(ptr, layout)
    }
}
