use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Interval between two polls of [`wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The outcome of one poll of [`wait_for`]: either the awaited value, or an
/// observation saying why not yet (shown if the wait times out).
///
/// Implemented for `Option<T>` (`None` = not yet, nothing to report) and for
/// `Result<T, E>` (`Err(e)` = not yet, and `e` is what was seen instead), so a
/// closure can say what it observed: `Err(format!("http_req_cnt={n}"))`.
pub trait Attempt<T> {
    /// `Ok(value)` when done, `Err(observation)` otherwise.
    fn into_outcome(self) -> Result<T, String>;
}

impl<T> Attempt<T> for Option<T> {
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Attempt<T> for Result<T, E> {
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` every 50 ms until it returns a value, and returns that value.
///
/// Distributed state (peers sessions, table pushes) converges eventually, not
/// at a known instant, so tests wait for a condition with a generous upper
/// bound rather than sleeping a fixed time and asserting. The bound is a
/// failure detector, not a performance assertion: pick it large (seconds).
///
/// Panics after `timeout` with `what` and the last observation.
pub fn wait_for<T, A: Attempt<T>>(timeout: Duration, what: &str, mut f: impl FnMut() -> A) -> T {
    let start = Instant::now();
    loop {
        match f().into_outcome() {
            Ok(value) => return value,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; last observation: {last}"
                    );
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_first_success() {
        let mut n = 0;
        let v = wait_for(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn result_closures_work() {
        let v: u32 = wait_for(Duration::from_secs(1), "ok", || Ok::<_, String>(7));
        assert_eq!(v, 7);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible; last observation: \"saw 42\"")]
    fn panics_with_last_observation() {
        wait_for(Duration::from_millis(120), "the impossible", || {
            Err::<(), _>("saw 42")
        });
    }
}
