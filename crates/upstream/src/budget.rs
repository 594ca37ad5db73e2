//! The retry budget: retries may be at most a share of the requests, with a small floor per
//! second, so that an upstream failing every request is not hit by a retry storm.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: usize) -> RetryBudget {
        RetryBudget {
            percent: percent as u64,
            min_per_second: min_per_second as u64,
            window: Mutex::new(Window {
                started: Instant::now(),
                requests: 0,
                retries: 0,
            }),
        }
    }

    /// The window `now` falls in, a new one when the last is over.
    fn current(&self, now: Instant) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.window.lock().unwrap();
        if now.saturating_duration_since(w.started) >= Duration::from_secs(1) {
            *w = Window {
                started: now,
                requests: 0,
                retries: 0,
            };
        }
        w
    }

    /// Counts one request (not its retries) that started at `now` (the request's own clock
    /// reading: counting it reads no clock).
    pub fn record_request(&self, now: Instant) {
        self.current(now).requests += 1;
    }

    /// Takes one retry from the budget; `false` when the budget is spent.
    pub fn try_retry(&self) -> bool {
        let mut w = self.current(Instant::now());
        let allowed = (w.requests * self.percent / 100).max(self.min_per_second);
        if w.retries < allowed {
            w.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_share_and_floor() {
        let b = RetryBudget::new(20, 3);
        for _ in 0..100 {
            b.record_request(Instant::now());
        }
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 20);
        let floor = RetryBudget::new(20, 3);
        floor.record_request(Instant::now());
        assert_eq!((0..10).filter(|_| floor.try_retry()).count(), 3);
    }
}
