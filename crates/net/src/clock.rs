//! The time of the current turn of a client connection's task, read from the clock once.
//!
//! Between two waits a request's work (admission, the choice of an endpoint, the head sent, the
//! answer relayed, the access line) takes microseconds, and reading the clock at each of its
//! steps cost more than the precision bought (16 reads a proxied request, 1.5% of the
//! gateway's CPU in a profile). While a connection's task is polled inside a [`Turn`], [`now`]
//! gives the time read when that poll began, as an event loop's cached time does; everywhere
//! else it reads the clock. Durations that span a wait (the upstream's answer, a body's
//! stream) are measured between two turns and lose nothing; steps within one poll count as
//! taking no time.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current turn's time, or the clock's outside a turn.
pub fn now() -> Instant {
    NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Time since `earlier`, by [`now`].
pub fn since(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

/// One poll of a connection's task: [`now`] is fixed from its start to its end (the drop).
pub struct Turn {
    outer: Option<Instant>,
}

impl Turn {
    pub fn start() -> Turn {
        Turn {
            outer: NOW.with(|n| n.replace(Some(Instant::now()))),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // A turn inside another (a task polled from within one) gives the outer one back.
        NOW.with(|n| n.set(self.outer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_holds_its_time_and_gives_back_the_clock() {
        let before = now();
        {
            let _turn = Turn::start();
            let at = now();
            assert!(at >= before);
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(now(), at, "the time moved within a turn");
            {
                let _inner = Turn::start();
                assert!(now() > at, "an inner turn reads the clock anew");
            }
            assert_eq!(now(), at, "the outer turn's time came back");
        }
        let outside = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() > outside, "outside a turn the clock is read");
    }
}
