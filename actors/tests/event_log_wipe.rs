//! Proves that the event log zeroizes chat bytes before their memory is freed: this test binary
//! runs under an allocator that inspects every block as it is freed and counts the ones that
//! still hold a marker string.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ephemera_actors::event_log::{EventKind, EventLog, Side};

const MARKER: &[u8] = b"WIPE-MARKER-7f3a";

struct InspectingAllocator;

static INSPECTING: AtomicBool = AtomicBool::new(false);
static FREED_WITH_MARKER: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for InspectingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if INSPECTING.load(Ordering::Relaxed) {
            let block = std::slice::from_raw_parts(ptr, layout.size());
            if block.windows(MARKER.len()).any(|w| w == MARKER) {
                FREED_WITH_MARKER.fetch_add(1, Ordering::Relaxed);
            }
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: InspectingAllocator = InspectingAllocator;

/// A body holding the marker, allocated once at its final size so no reallocation frees a
/// copy behind the log's back.
fn marked_body(n: u8, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len.max(64));
    body.extend_from_slice(b"{\"text\":\"");
    body.extend_from_slice(MARKER);
    body.push(n);
    body.resize(len.max(body.len()), b'x');
    body
}

// One test function only: the counters are process-wide and tests run on parallel threads.
#[test]
fn evicted_and_wiped_events_leave_no_bytes_in_freed_memory() {
    INSPECTING.store(true, Ordering::SeqCst);

    // Control: a plain Vec freed without wiping is caught, so the detector works.
    drop(marked_body(0, 0));
    assert_eq!(FREED_WITH_MARKER.swap(0, Ordering::SeqCst), 1);

    let mut log = EventLog::new(4, 1 << 20);
    for seq in 1..=10 {
        log.append(seq, EventKind::Matched, Side::A, marked_body(seq as u8, 0));
    }
    // Six events were evicted by the count bound.
    let mut small = EventLog::new(100, 64);
    for seq in 1..=10 {
        small.append(seq, EventKind::Matched, Side::B, marked_body(seq as u8, 0));
    }
    // An oversized event is refused and must be wiped too.
    small.append(11, EventKind::Matched, Side::B, marked_body(11, 200));
    log.wipe();
    drop(small);
    INSPECTING.store(false, Ordering::SeqCst);

    assert_eq!(FREED_WITH_MARKER.load(Ordering::SeqCst), 0);
}
