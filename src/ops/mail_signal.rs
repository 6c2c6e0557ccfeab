//! Wakes the delivery workers ([`crate::mail::Courier`]) when a reset mail
//! is queued, and when they are asked to stop.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Wakes delivery workers when mail is queued (and when asked to stop).
#[derive(Debug, Default)]
pub(crate) struct MailSignal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl MailSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A panic while holding this lock leaves a plain counter behind.
        self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation: pass it to [`MailSignal::wait`].
    pub fn generation(&self) -> u64 {
        *self.lock()
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        let mut g = self.lock();
        *g = g.wrapping_add(1);
        self.cv.notify_all();
    }

    /// Waits until the generation moves past `seen`, or `timeout`.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let g = self.lock();
        if *g != seen {
            return;
        }
        let _ = self
            .cv
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .map_err(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_wakes_a_waiter() {
        let s = std::sync::Arc::new(MailSignal::default());
        let seen = s.generation();
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.wait(seen, Duration::from_secs(30)))
        };
        s.notify();
        t.join().unwrap();
        assert_ne!(s.generation(), seen);
        // A moved generation returns at once.
        s.wait(seen, Duration::from_secs(30));
    }
}
