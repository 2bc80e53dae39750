//! The event log's hot paths (append with eviction, replay from a seq, wipe) against a plain
//! `VecDeque` of owned events with the same bounds and no wiping.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ephemera_actors::event_log::{EventKind, EventLog, Side};

const MAX_EVENTS: usize = 256;
const MAX_BYTES: usize = 4 << 20;
const EVENTS: u64 = 10_000;
const BODY: usize = 100;

/// The baseline: the obvious bounded queue, no zeroizing.
struct PlainLog {
    events: VecDeque<(u64, u8, Side, Vec<u8>)>,
    bytes: usize,
}

impl PlainLog {
    fn append(&mut self, seq: u64, body: Vec<u8>) {
        while self.events.len() == MAX_EVENTS || self.bytes + body.len() > MAX_BYTES {
            let (_, _, _, old) = self.events.pop_front().unwrap();
            self.bytes -= old.len();
        }
        self.bytes += body.len();
        self.events.push_back((seq, 1, Side::A, body));
    }
}

fn filled_log() -> EventLog {
    let mut log = EventLog::new(MAX_EVENTS, MAX_BYTES);
    for seq in 1..=EVENTS {
        log.append(seq, EventKind::Msg, Side::A, vec![b'x'; BODY]);
    }
    log
}

fn bench(c: &mut Criterion) {
    // Correctness first: both keep the same newest events.
    let log = filled_log();
    let mut plain = PlainLog {
        events: VecDeque::new(),
        bytes: 0,
    };
    for seq in 1..=EVENTS {
        plain.append(seq, vec![b'x'; BODY]);
    }
    let ours: Vec<u64> = log.replay_after(0).map(|e| e.seq).collect();
    let theirs: Vec<u64> = plain.events.iter().map(|e| e.0).collect();
    assert_eq!(ours, theirs);

    let mut group = c.benchmark_group("event_log/append_10k");
    group.bench_function("ephemera", |b| {
        b.iter_batched(
            || EventLog::new(MAX_EVENTS, MAX_BYTES),
            |mut log| {
                for seq in 1..=EVENTS {
                    log.append(seq, EventKind::Msg, Side::A, vec![b'x'; BODY]);
                }
                log
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("baseline_vecdeque", |b| {
        b.iter_batched(
            || PlainLog {
                events: VecDeque::with_capacity(MAX_EVENTS),
                bytes: 0,
            },
            |mut log| {
                for seq in 1..=EVENTS {
                    log.append(seq, vec![b'x'; BODY]);
                }
                log
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("event_log/replay_last_128");
    let after = EVENTS - 128;
    group.bench_function("ephemera", |b| {
        b.iter(|| {
            log.replay_after(black_box(after))
                .map(|e| e.body.len())
                .sum::<usize>()
        })
    });
    group.bench_function("baseline_vecdeque", |b| {
        b.iter(|| {
            plain
                .events
                .iter()
                .filter(|e| e.0 > black_box(after))
                .map(|e| e.3.len())
                .sum::<usize>()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("event_log/end_of_chat");
    group.bench_function("ephemera_wipe", |b| {
        b.iter_batched(filled_log, |mut log| log.wipe(), BatchSize::LargeInput)
    });
    group.bench_function("baseline_drop", |b| {
        b.iter_batched(
            || {
                let mut plain = PlainLog {
                    events: VecDeque::new(),
                    bytes: 0,
                };
                for seq in 1..=EVENTS {
                    plain.append(seq, vec![b'x'; BODY]);
                }
                plain
            },
            drop,
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
