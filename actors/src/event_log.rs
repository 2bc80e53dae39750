//! The ephemeral event log of one chat: a bounded ring of chat events that the pair actor
//! appends to (it is the only writer), replays from on resume, and wipes when the chat ends.
//!
//! The log stores opaque bytes with a sequence number, the event's kind and the side that
//! caused the event, and finds a member's event by the client's message id at the start of
//! its body (so a resent message is recognised, for as long as the log holds it); how the bytes
//! are rendered is the pair actor's business. Both bounds (events and bytes)
//! are enforced by evicting the oldest events, and every evicted or wiped body is zeroized
//! before its memory is released, so no chat content survives in freed heap blocks.

use zeroize::Zeroize;

/// Which member of a chat an event concerns. `A` is the member matched first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What kind of chat event a log entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The chat began (always seq 1); its body is empty, rendered per member.
    Matched,
    /// A `msg`; its body is the escaped `"text":"…"}` both members share.
    Msg,
    /// A `media`; its body is `"kind":…,"mime":…,"data":…}`.
    Media,
}

/// One logged chat event.
#[derive(Debug)]
pub struct LogEntry {
    pub seq: u64,
    pub kind: EventKind,
    pub side: Side,
    pub body: Vec<u8>,
    /// The first `id_len` bytes of `body` name the event for its sender (the client's message
    /// id); 0 when it has none.
    pub id_len: usize,
}

impl LogEntry {
    /// The part of the body that names the event for its sender; empty when it has none.
    pub fn id_part(&self) -> &[u8] {
        &self.body[..self.id_len]
    }

    /// The part of the body both members see.
    pub fn shared_part(&self) -> &[u8] {
        &self.body[self.id_len..]
    }
}

/// A ring buffer of chat events bounded by count and by total body bytes.
///
/// The slot array starts small and doubles up to `max_events` as a chat gets longer: most
/// chats are short, and a full-size array for every chat was the largest per-chat allocation
/// in the idle benchmark's heap profile (10 KB per pair). Growing moves only slot headers; the
/// bodies stay where they are.
pub struct EventLog {
    slots: Box<[Option<LogEntry>]>,
    max_events: usize,
    /// Index of the oldest held event in `slots`.
    head: usize,
    len: usize,
    bytes: usize,
    max_bytes: usize,
    /// Number of events ever evicted or refused because of the bounds (for the metrics).
    evicted: u64,
}

impl EventLog {
    /// A log that holds at most `max_events` events and `max_bytes` bytes of bodies.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        let max_events = max_events.max(1);
        Self {
            slots: empty_slots(max_events.min(INITIAL_SLOTS)),
            max_events,
            head: 0,
            len: 0,
            bytes: 0,
            max_bytes,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total body bytes currently held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sequence number of the oldest event still held.
    pub fn first_seq(&self) -> Option<u64> {
        self.get(0).map(|entry| entry.seq)
    }

    /// Sequence number of the newest event held.
    pub fn last_seq(&self) -> Option<u64> {
        self.len
            .checked_sub(1)
            .and_then(|i| self.get(i))
            .map(|e| e.seq)
    }

    /// Appends an event, evicting the oldest ones until both bounds hold. Sequence numbers
    /// must increase; an event whose body alone exceeds `max_bytes` is not kept (it was
    /// delivered live, but cannot be replayed) and is wiped at once.
    pub fn append(&mut self, seq: u64, kind: EventKind, side: Side, body: Vec<u8>) {
        self.push(LogEntry {
            seq,
            kind,
            side,
            body,
            id_len: 0,
        });
    }

    /// Appends an event that may carry a message id; see `append`.
    pub fn push(&mut self, mut entry: LogEntry) {
        debug_assert!(
            self.last_seq().is_none_or(|last| last < entry.seq),
            "seqs must increase"
        );
        debug_assert!(entry.id_len <= entry.body.len());
        if entry.body.len() > self.max_bytes {
            entry.body.zeroize();
            self.evicted += 1;
            return;
        }
        if self.len == self.slots.len() && self.slots.len() < self.max_events {
            self.grow();
        }
        while self.len == self.slots.len() || self.bytes + entry.body.len() > self.max_bytes {
            self.evict_oldest();
        }
        let index = (self.head + self.len) % self.slots.len();
        self.bytes += entry.body.len();
        self.slots[index] = Some(entry);
        self.len += 1;
    }

    /// The held event of `kind` that `side` sent with message id `id_part` (as
    /// `LogEntry::id_part` renders it), if any. Newest first: a resend is almost always of a
    /// recent message. The kind must match too: a cheap `msg` must never fetch the echo of an
    /// image, whose rate is limited far lower.
    pub fn sent_with_id(&self, side: Side, kind: EventKind, id_part: &[u8]) -> Option<&LogEntry> {
        if id_part.is_empty() {
            return None;
        }
        (0..self.len)
            .rev()
            .filter_map(|i| self.get(i))
            .find(|entry| entry.side == side && entry.kind == kind && entry.id_part() == id_part)
    }

    /// The held events with `seq > after`, oldest first.
    pub fn replay_after(&self, after: u64) -> impl Iterator<Item = &LogEntry> {
        // Held seqs increase with the logical index, so the first wanted one is found by
        // binary search instead of a scan of the whole ring.
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = (low + high) / 2;
            match self.get(mid) {
                Some(entry) if entry.seq <= after => low = mid + 1,
                _ => high = mid,
            }
        }
        (low..self.len).filter_map(move |i| self.get(i))
    }

    /// Zeroizes and frees every held event. The log stays usable (and empty).
    pub fn wipe(&mut self) {
        while self.len > 0 {
            self.remove_oldest();
        }
        self.head = 0;
    }

    /// Doubles the slot array (up to `max_events`), oldest event first in the new one.
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).min(self.max_events);
        let mut slots = empty_slots(capacity);
        for (logical, slot) in slots.iter_mut().enumerate().take(self.len) {
            let index = (self.head + logical) % self.slots.len();
            *slot = self.slots[index].take();
        }
        self.slots = slots;
        self.head = 0;
    }

    fn get(&self, logical: usize) -> Option<&LogEntry> {
        if logical >= self.len {
            return None;
        }
        self.slots[(self.head + logical) % self.slots.len()].as_ref()
    }

    fn evict_oldest(&mut self) {
        if self.remove_oldest() {
            self.evicted += 1;
        }
    }

    fn remove_oldest(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        if let Some(mut entry) = self.slots[self.head].take() {
            self.bytes -= entry.body.len();
            // Zeroize wipes the spare capacity too, then the allocation is released.
            entry.body.zeroize();
        }
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        true
    }
}

/// Slots a new log starts with: a short chat never grows its array.
const INITIAL_SLOTS: usize = 16;

fn empty_slots(count: usize) -> Box<[Option<LogEntry>]> {
    (0..count).map(|_| None).collect()
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.wipe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize, byte: u8) -> Vec<u8> {
        vec![byte; n]
    }

    fn seqs(log: &EventLog, after: u64) -> Vec<u64> {
        log.replay_after(after).map(|e| e.seq).collect()
    }

    #[test]
    fn wraps_around_keeping_the_newest_events() {
        let mut log = EventLog::new(4, 1 << 20);
        for seq in 1..=10 {
            log.append(seq, EventKind::Msg, Side::A, body(3, seq as u8));
        }
        assert_eq!(log.len(), 4);
        assert_eq!(seqs(&log, 0), vec![7, 8, 9, 10]);
        assert_eq!(log.evicted(), 6);
        assert_eq!(log.bytes(), 12);
        // The bodies are the ones appended with those seqs, not stale slot contents.
        let bodies: Vec<u8> = log.replay_after(0).map(|e| e.body[0]).collect();
        assert_eq!(bodies, vec![7, 8, 9, 10]);
    }

    #[test]
    fn byte_bound_evicts_oldest_until_the_new_event_fits() {
        let mut log = EventLog::new(100, 10);
        log.append(1, EventKind::Msg, Side::A, body(4, 1));
        log.append(2, EventKind::Msg, Side::B, body(4, 2));
        assert_eq!(log.bytes(), 8);
        log.append(3, EventKind::Msg, Side::A, body(5, 3));
        assert_eq!(seqs(&log, 0), vec![2, 3]);
        assert_eq!(log.bytes(), 9);
        assert!(log.bytes() <= 10);
    }

    #[test]
    fn an_event_larger_than_the_byte_bound_is_not_kept() {
        let mut log = EventLog::new(10, 10);
        log.append(1, EventKind::Msg, Side::A, body(4, 1));
        log.append(2, EventKind::Msg, Side::A, body(11, 2));
        assert_eq!(seqs(&log, 0), vec![1]);
        assert_eq!(log.evicted(), 1);
    }

    #[test]
    fn replay_returns_exactly_the_events_after_a_seq() {
        let mut log = EventLog::new(8, 1 << 20);
        for seq in 1..=12 {
            log.append(seq, EventKind::Msg, Side::A, body(1, 0));
        }
        assert_eq!(seqs(&log, 0), (5..=12).collect::<Vec<_>>());
        assert_eq!(seqs(&log, 4), (5..=12).collect::<Vec<_>>());
        assert_eq!(seqs(&log, 9), vec![10, 11, 12]);
        assert_eq!(seqs(&log, 12), Vec::<u64>::new());
        assert_eq!(seqs(&log, 99), Vec::<u64>::new());
        assert_eq!(log.first_seq(), Some(5));
        assert_eq!(log.last_seq(), Some(12));
    }

    #[test]
    fn the_slot_array_grows_only_as_needed_and_keeps_order_across_a_wrapped_ring() {
        let mut log = EventLog::new(40, 20);
        assert_eq!(log.slots.len(), INITIAL_SLOTS);
        // Four-byte events hit the byte bound first, so the oldest are evicted and the ring's
        // head moves on; one-byte events then fill it until it wraps and must grow.
        for seq in 1..=8 {
            log.append(seq, EventKind::Msg, Side::A, body(4, seq as u8));
        }
        assert_ne!(log.head, 0);
        let mut seq = 9;
        while log.len() < INITIAL_SLOTS {
            log.append(seq, EventKind::Msg, Side::B, body(1, seq as u8));
            seq += 1;
        }
        assert!(
            log.head + log.len() > log.slots.len(),
            "the ring has wrapped"
        );
        assert_eq!(log.slots.len(), INITIAL_SLOTS);
        log.append(seq, EventKind::Msg, Side::A, body(1, seq as u8));
        assert_eq!(log.slots.len(), 2 * INITIAL_SLOTS);
        let first = seq + 1 - log.len() as u64;
        assert_eq!(seqs(&log, 0), (first..=seq).collect::<Vec<_>>());
        let bodies: Vec<u8> = log.replay_after(0).map(|e| e.body[0]).collect();
        assert_eq!(bodies, (first..=seq).map(|s| s as u8).collect::<Vec<_>>());
        // Growth stops at max_events.
        for more in seq + 1..seq + 100 {
            log.append(more, EventKind::Msg, Side::A, body(0, 0));
        }
        assert_eq!(log.slots.len(), 40);
        assert_eq!(log.len(), 40);
    }

    fn with_id(seq: u64, side: Side, id: &[u8]) -> LogEntry {
        let mut body = id.to_vec();
        body.extend_from_slice(b"shared");
        LogEntry {
            seq,
            kind: EventKind::Msg,
            side,
            body,
            id_len: id.len(),
        }
    }

    #[test]
    fn an_event_is_found_by_its_senders_id_while_the_log_holds_it() {
        let mut log = EventLog::new(3, 1 << 20);
        log.push(with_id(1, Side::A, b"\"id\":\"a1\","));
        log.push(with_id(2, Side::B, b"\"id\":\"a1\","));
        log.append(3, EventKind::Msg, Side::A, body(2, 0));
        let found = log
            .sent_with_id(Side::A, EventKind::Msg, b"\"id\":\"a1\",")
            .unwrap();
        assert_eq!((found.seq, found.shared_part()), (1, &b"shared"[..]));
        assert_eq!(
            log.sent_with_id(Side::B, EventKind::Msg, b"\"id\":\"a1\",")
                .unwrap()
                .seq,
            2
        );
        assert!(log
            .sent_with_id(Side::A, EventKind::Msg, b"\"id\":\"a2\",")
            .is_none());
        assert!(
            log.sent_with_id(Side::A, EventKind::Msg, b"").is_none(),
            "no id names nothing"
        );
        assert!(
            log.sent_with_id(Side::A, EventKind::Media, b"\"id\":\"a1\",")
                .is_none(),
            "a message's id does not name an image"
        );
        // Once evicted, the id is forgotten with its event.
        log.append(4, EventKind::Msg, Side::B, body(2, 0));
        assert!(log
            .sent_with_id(Side::A, EventKind::Msg, b"\"id\":\"a1\",")
            .is_none());
        assert_eq!(
            log.sent_with_id(Side::B, EventKind::Msg, b"\"id\":\"a1\",")
                .unwrap()
                .seq,
            2
        );
    }

    #[test]
    fn wipe_empties_the_log_and_it_can_be_reused() {
        let mut log = EventLog::new(4, 100);
        for seq in 1..=6 {
            log.append(seq, EventKind::Msg, Side::B, body(10, 0xAB));
        }
        log.wipe();
        assert!(log.is_empty());
        assert_eq!(log.bytes(), 0);
        assert_eq!(seqs(&log, 0), Vec::<u64>::new());
        log.append(7, EventKind::Msg, Side::A, body(1, 1));
        assert_eq!(seqs(&log, 0), vec![7]);
    }
}
