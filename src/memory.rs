//! Gives freed memory back to the operating system. glibc's malloc keeps freed blocks in its
//! arenas for reuse, so after a burst (a flood that was cut off, a thousand chats that ended)
//! the process would stay at its peak size for good. `malloc_trim` releases the free pages of
//! every arena; run on a timer it bounds how long a burst's memory stays resident. With the
//! `mimalloc` feature the allocator returns memory by itself and this does nothing.

use std::time::Duration;

/// Trims the allocator every `interval`, forever. Spawn it once per process.
pub async fn trim_every(interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        trim();
    }
}

/// Releases free heap pages to the operating system now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim only walks glibc's own allocator state, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
