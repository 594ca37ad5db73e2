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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
    /// A reading of both clocks, from which [`wall`] tells the time of day of a turn.
    static WALL: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// How long [`wall`] goes on from one reading of both clocks before it reads them again: a
/// time of day adjusted meanwhile (by NTP, by hand) shows in the access lines within this.
const WALL_REREAD: Duration = Duration::from_secs(1);

/// The current turn's time, or the clock's outside a turn.
pub fn now() -> Instant {
    NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Time since `earlier`, by [`now`].
pub fn since(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

/// The time of day at [`now`]: within a turn, the turn's time carried onto the wall clock
/// (no clock read); elsewhere the wall clock's own.
pub fn wall() -> SystemTime {
    let Some(at) = NOW.with(Cell::get) else {
        return SystemTime::now();
    };
    WALL.with(|w| match w.get() {
        Some((then, wall)) if at >= then && at - then < WALL_REREAD => wall + (at - then),
        _ => {
            let wall = SystemTime::now();
            w.set(Some((at, wall)));
            wall
        }
    })
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

/// An `Option<Instant>` that tasks share without a lock: nanoseconds since a point of the
/// process's own, one added so that zero stands for `None`. A moment before that point (the
/// first use of any) counts as the point itself.
#[derive(Debug, Default)]
pub struct AtomicInstant(AtomicU64);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl AtomicInstant {
    pub fn new(at: Option<Instant>) -> AtomicInstant {
        AtomicInstant(AtomicU64::new(Self::encode(at)))
    }

    fn encode(at: Option<Instant>) -> u64 {
        // 2^64 ns are 584 years: no process runs long enough to wrap.
        at.map_or(0, |t| {
            t.saturating_duration_since(origin()).as_nanos() as u64 + 1
        })
    }

    pub fn load(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(origin() + Duration::from_nanos(n - 1)),
        }
    }

    pub fn store(&self, at: Option<Instant>) {
        self.0.store(Self::encode(at), Ordering::Release);
    }

    pub fn is_some(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_instant_gives_back_what_it_was_given() {
        let a = AtomicInstant::new(None);
        assert_eq!(a.load(), None);
        assert!(!a.is_some());
        let t = Instant::now() + Duration::from_millis(1500);
        a.store(Some(t));
        assert!(a.is_some());
        // Nanoseconds kept: the same instant back, to the nanosecond the clock has.
        assert_eq!(a.load(), Some(t));
        a.store(None);
        assert_eq!(a.load(), None);
        let before_origin = AtomicInstant::new(Some(origin()));
        assert_eq!(before_origin.load(), Some(origin()));
    }

    #[test]
    fn the_wall_clock_of_a_turn_follows_the_turn() {
        let outside = wall();
        let _turn = Turn::start();
        let a = wall();
        let b = wall();
        assert_eq!(a, b, "the time of day moved within a turn");
        assert!(a >= outside - Duration::from_millis(1));
        let drift = a
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_millis(100), "{drift:?}");
    }

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
