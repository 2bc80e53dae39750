//! The session's rules as plain values, apart from the actor so they can be tested alone:
//! when an outbox is too full to keep, which refusals are counted under which reason, and the
//! protocol-error budget that ends a connection which keeps sending what is refused (every
//! refused frame spends it: each one costs the server an answer).

use std::collections::VecDeque;
use std::time::Duration;

use crate::metrics::Refusal;
use crate::protocol::ErrorCode;

/// The bounds on what a session may leave unsent.
#[derive(Debug, Clone, Copy)]
pub struct OutboxBounds {
    /// `session_outbox_max_bytes`.
    pub max_bytes: usize,
    /// `outbox_fair_share_bytes`: what a session may still hold while all outboxes together
    /// are over `outbox_total_max_bytes`.
    pub fair_share_bytes: usize,
}

impl OutboxBounds {
    /// Whether a client must be cut off, with `unsent` bytes queued of which `just_queued`
    /// were queued by this very send. Its own bound counts everything. The fair share counts
    /// only what was waiting before: a client that reads as fast as it is sent has nothing
    /// waiting, and must not be the one cut off (an image alone is over the fair share)
    /// because others filled the server-wide budget by not reading.
    pub fn must_cut_off(
        &self,
        unsent: usize,
        just_queued: usize,
        all_outboxes_over_budget: bool,
    ) -> bool {
        let waiting_before = unsent.saturating_sub(just_queued);
        unsent > self.max_bytes
            || (all_outboxes_over_budget && waiting_before > self.fair_share_bytes)
    }
}

/// The counter an error answer is counted under.
pub fn refusal_for(code: ErrorCode) -> Refusal {
    match code {
        ErrorCode::BadRequest => Refusal::BadRequest,
        ErrorCode::TooLarge => Refusal::TooLarge,
        ErrorCode::NotChatting => Refusal::NotChatting,
        ErrorCode::AlreadyChatting => Refusal::AlreadyChatting,
        ErrorCode::AgeRequired => Refusal::AgeRequired,
        ErrorCode::PowRequired | ErrorCode::PowInvalid => Refusal::ProofOfWork,
        ErrorCode::RateLimited => Refusal::RateLimited,
        ErrorCode::Banned => Refusal::Banned,
        ErrorCode::ServerBusy => Refusal::ServerBusy,
    }
}

/// Protocol errors within a sliding window; past `max` the connection is closed (1008).
#[derive(Debug)]
pub struct ErrorBudget<I> {
    max: usize,
    window: Duration,
    recent: VecDeque<I>,
}

impl<I> ErrorBudget<I>
where
    I: Copy + Ord + std::ops::Sub<Output = Duration>,
{
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records an error at `now`; returns true when the budget is spent.
    pub fn record(&mut self, now: I) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now - *at > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn an_outbox_is_cut_off_past_its_bound_or_past_its_share_under_pressure() {
        let bounds = OutboxBounds {
            max_bytes: 1000,
            fair_share_bytes: 100,
        };
        assert!(!bounds.must_cut_off(1000, 0, false));
        assert!(bounds.must_cut_off(1001, 0, false));
        assert!(
            bounds.must_cut_off(1001, 1001, false),
            "its own bound counts everything"
        );
        assert!(!bounds.must_cut_off(100, 0, true), "within its share");
        assert!(
            bounds.must_cut_off(101, 0, true),
            "over its share while the server is pressed"
        );
        assert!(!bounds.must_cut_off(101, 0, false));
        // A reader that keeps up has nothing waiting when a large frame comes: the frame alone
        // is over the share, and still not a reason to cut it off under pressure.
        assert!(!bounds.must_cut_off(500, 500, true));
        assert!(!bounds.must_cut_off(550, 500, true));
        assert!(
            bounds.must_cut_off(650, 500, true),
            "it was already holding 150"
        );
    }

    #[test]
    fn each_refusal_is_counted_under_its_own_reason() {
        assert_eq!(refusal_for(ErrorCode::PowInvalid), Refusal::ProofOfWork);
        assert_eq!(refusal_for(ErrorCode::PowRequired), Refusal::ProofOfWork);
        assert_eq!(refusal_for(ErrorCode::NotChatting), Refusal::NotChatting);
        assert_eq!(refusal_for(ErrorCode::ServerBusy), Refusal::ServerBusy);
    }

    #[test]
    fn the_error_budget_is_a_sliding_window() {
        let mut budget = ErrorBudget::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!budget.record(t0));
        assert!(!budget.record(t0 + Duration::from_secs(1)));
        assert!(
            budget.record(t0 + Duration::from_secs(2)),
            "the third within a minute"
        );
        let mut budget = ErrorBudget::new(2, Duration::from_secs(60));
        assert!(!budget.record(t0));
        assert!(!budget.record(t0 + Duration::from_secs(1)));
        assert!(
            !budget.record(t0 + Duration::from_secs(62)),
            "the first two have left the window"
        );
    }
}
