//! Pure reconnect-delay logic: exponential backoff with jitter, the restart counter that only
//! resets after a stable period, and OTP-style restart intensity (more than N restarts within a
//! window is a restart storm). No I/O and no clock of its own: callers pass `now`, so it is unit
//! tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Exponential backoff: `delay(attempt) = min(max, base × factor^attempt)`, then jittered by
/// ± `jitter` × delay (so the largest delay ever used is `max × (1 + jitter)`).
///
/// Defaults: base 50 ms, factor 2, cap 2 s, jitter 0.2 (the Node services this replaces use
/// 50 ms → 2 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// The cap on the nominal delay.
    pub max: Duration,
    /// Growth per attempt (≥ 1.0).
    pub factor: f64,
    /// Relative jitter in `[0, 1)`: 0.2 means each delay is drawn from ±20 % of its nominal value.
    pub jitter: f64,
}

/// Default [`BackoffPolicy::base`]: 50 ms.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Default [`BackoffPolicy::max`]: 2 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default [`BackoffPolicy::factor`]: 2.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;
/// Default [`BackoffPolicy::jitter`]: 0.2 (±20 %).
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.2;

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: DEFAULT_BACKOFF_BASE,
            max: DEFAULT_BACKOFF_MAX,
            factor: DEFAULT_BACKOFF_FACTOR,
            jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `attempt` (0-based) without jitter:
    /// `min(max, base × factor^attempt)`.
    ///
    /// Never panics, whatever the fields hold (they are public, so [`Config`](crate::Config)'s
    /// checks may have been bypassed): a factor below 1, NaN or infinite, a `base` above `max`
    /// or `Duration::MAX` all give a delay between zero and `max`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        // powi saturates to +inf for large attempts; the comparison then picks the cap.
        let exp = self.factor.powi(i32::try_from(attempt).unwrap_or(i32::MAX));
        let secs = self.base.as_secs_f64() * exp;
        if secs.is_nan() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    }

    /// The jittered delay before retry number `attempt`, where `sample` is a uniform random
    /// number in `[0, 1)`: `nominal × (1 − jitter + 2 × jitter × sample)`. A jitter outside
    /// `[0, 1]` (or NaN) is clamped, a NaN sample counts as 0.5, and the result saturates at
    /// `Duration::MAX`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let sample = if sample.is_nan() {
            0.5
        } else {
            sample.clamp(0.0, 1.0)
        };
        let jitter = self.clamped_jitter();
        scale(self.nominal(attempt), 1.0 - jitter + 2.0 * jitter * sample)
    }

    /// The largest delay [`delay`](Self::delay) can return: `max × (1 + jitter)` (saturating).
    pub fn ceiling(&self) -> Duration {
        scale(self.max, 1.0 + self.clamped_jitter())
    }

    /// The jitter actually applied: [`jitter`](Self::jitter) clamped to `[0, 1]`, NaN as 0.
    fn clamped_jitter(&self) -> f64 {
        if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        }
    }
}

/// `d × by`, saturating at `Duration::MAX`; a negative or NaN product is zero.
fn scale(d: Duration, by: f64) -> Duration {
    let secs = d.as_secs_f64() * by;
    Duration::try_from_secs_f64(secs).unwrap_or(if secs > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// Counts consecutive failed connections and decides each reconnect delay.
///
/// The attempt counter grows with every failure and resets only when a connection has stayed up
/// for `stable_period`: a server that accepts and then drops every connection keeps the delay at
/// the cap instead of being hammered at the base delay.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    policy: BackoffPolicy,
    stable_period: Duration,
    attempt: u32,
    up_since: Option<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: BackoffPolicy, stable_period: Duration) -> Self {
        Self {
            policy,
            stable_period,
            attempt: 0,
            up_since: None,
        }
    }

    /// Consecutive failures so far (0 after a stable connection).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A connection came up at `now`.
    pub(crate) fn on_up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// True when the current connection came up at least `stable_period` before `now`.
    pub(crate) fn is_stable(&self, now: Instant) -> bool {
        self.up_since
            .is_some_and(|up| now.saturating_duration_since(up) >= self.stable_period)
    }

    /// A connection (or connection attempt) failed at `now`: returns the delay before the next
    /// attempt, using `sample` (uniform in `[0, 1)`) for jitter. During a restart storm
    /// (`at_cap`) the delay is the cap, whatever the attempt count.
    pub(crate) fn on_failure(&mut self, now: Instant, sample: f64, at_cap: bool) -> Duration {
        if self.is_stable(now) {
            self.attempt = 0;
        }
        self.up_since = None;
        let attempt = if at_cap { u32::MAX } else { self.attempt };
        let delay = self.policy.delay(attempt, sample);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

/// Restart intensity, as OTP supervisors define it: more than `max_restarts` restarts within
/// `window` is a restart storm.
#[derive(Debug, Clone)]
pub(crate) struct RestartIntensity {
    max_restarts: u32,
    window: Duration,
    restarts: VecDeque<Instant>,
}

impl RestartIntensity {
    pub(crate) fn new(max_restarts: u32, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; returns the number of restarts within the window when that
    /// exceeds the limit. Memory stays bounded: at most `max_restarts + 1` instants are kept.
    pub(crate) fn record(&mut self, now: Instant) -> Option<u32> {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        let keep = usize::try_from(self.max_restarts)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        while self.restarts.len() > keep {
            self.restarts.pop_front();
        }
        let n = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        (n > self.max_restarts).then_some(n)
    }

    /// The window restarts are counted in.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Forgets every restart (after a stable connection).
    pub(crate) fn reset(&mut self) {
        self.restarts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nominal_grows_then_caps() {
        let p = BackoffPolicy::default();
        let got: Vec<u128> = (0..9).map(|a| p.nominal(a).as_millis()).collect();
        assert_eq!(got, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(p.nominal(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = BackoffPolicy::default();
        for attempt in 0..12 {
            let n = p.nominal(attempt);
            for s in [0.0, 0.25, 0.5, 0.999, 1.0] {
                let d = p.delay(attempt, s);
                assert!(
                    d >= n.mul_f64(0.8) - MS && d <= n.mul_f64(1.2) + MS,
                    "{d:?} vs {n:?}"
                );
                assert!(d <= p.ceiling());
            }
        }
        assert_eq!(p.delay(3, 0.5), p.nominal(3));
    }

    #[test]
    fn jittered_delays_still_grow() {
        // Worst case: the high end of one step against the low end of the next.
        let p = BackoffPolicy::default();
        for attempt in 0..5 {
            assert!(p.delay(attempt, 1.0) < p.delay(attempt + 1, 0.0));
        }
    }

    #[test]
    fn counter_resets_only_after_stable_period() {
        let stable = Duration::from_secs(5);
        let mut t = RestartTracker::new(BackoffPolicy::default(), stable);
        let t0 = Instant::now();
        assert_eq!(t.on_failure(t0, 0.5, false), 50 * MS);
        assert_eq!(t.on_failure(t0, 0.5, false), 100 * MS);
        // Up, but dropped after 1 s: not stable, keep growing.
        t.on_up(t0);
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(1), 0.5, false),
            200 * MS
        );
        assert_eq!(t.attempt(), 3);
        // Up for the full stable period: back to the base delay.
        t.on_up(t0 + Duration::from_secs(2));
        assert!(!t.is_stable(t0 + Duration::from_secs(6)));
        assert!(t.is_stable(t0 + Duration::from_secs(7)));
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(7), 0.5, false),
            50 * MS
        );
        assert_eq!(t.attempt(), 1);
        // In a restart storm the delay is the cap from the first failure.
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(8), 0.5, true),
            2000 * MS
        );
    }

    #[test]
    fn accept_then_drop_stays_at_cap() {
        let mut t = RestartTracker::new(BackoffPolicy::default(), Duration::from_secs(5));
        let mut now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            t.on_up(now);
            now += Duration::from_millis(50);
            last = t.on_failure(now, 0.5, false);
            now += last;
        }
        assert_eq!(last, Duration::from_secs(2));
    }

    #[test]
    fn restart_intensity_counts_within_the_window() {
        let mut i = RestartIntensity::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(i.record(t0), None);
        assert_eq!(i.record(t0 + Duration::from_secs(1)), None);
        assert_eq!(i.record(t0 + Duration::from_secs(2)), None);
        assert_eq!(i.record(t0 + Duration::from_secs(3)), Some(4));
        // Old restarts leave the window: only t0+3 s is still in it.
        assert_eq!(i.record(t0 + Duration::from_secs(12)), None);
        assert_eq!(i.record(t0 + Duration::from_secs(12)), None);
        assert_eq!(i.record(t0 + Duration::from_secs(12)), Some(4));
        i.reset();
        assert_eq!(i.record(t0 + Duration::from_secs(13)), None);
        // Bounded memory however many restarts.
        for k in 0..10_000 {
            i.record(t0 + Duration::from_secs(14) + Duration::from_micros(k));
        }
        assert!(i.restarts.len() <= 4);
    }

    #[test]
    fn extreme_policies_never_panic() {
        let huge = Duration::MAX;
        let policies = [
            BackoffPolicy {
                base: huge,
                max: huge,
                factor: 2.0,
                jitter: 0.2,
            },
            BackoffPolicy {
                base: huge,
                max: huge,
                factor: f64::INFINITY,
                jitter: 5.0,
            },
            BackoffPolicy {
                base: MS,
                max: huge,
                factor: f64::NAN,
                jitter: f64::NAN,
            },
            BackoffPolicy {
                base: MS,
                max: huge,
                factor: 0.0,
                jitter: -3.0,
            },
            BackoffPolicy {
                base: huge,
                max: MS,
                factor: -2.0,
                jitter: f64::INFINITY,
            },
            BackoffPolicy {
                base: Duration::ZERO,
                max: Duration::ZERO,
                factor: 1.0,
                jitter: 0.9,
            },
        ];
        for p in policies {
            for attempt in [0, 1, 63, 64, 1_000, u32::MAX - 1, u32::MAX] {
                assert!(p.nominal(attempt) <= p.max, "{p:?} {attempt}");
                for s in [0.0, 0.5, 1.0, -1.0, 7.0, f64::NAN, f64::INFINITY] {
                    assert!(p.delay(attempt, s) <= p.ceiling(), "{p:?} {attempt} {s}");
                }
            }
        }
        // Duration::MAX with any jitter saturates instead of overflowing.
        let p = BackoffPolicy {
            base: huge,
            max: huge,
            factor: 2.0,
            jitter: 0.5,
        };
        assert_eq!(p.ceiling(), huge);
        assert_eq!(p.delay(u32::MAX, 1.0), huge);
        // A huge factor caps at max, a factor below 1 shrinks toward zero without going negative.
        let p = BackoffPolicy {
            factor: 1e300,
            ..BackoffPolicy::default()
        };
        assert_eq!(p.nominal(5), p.max);
        let p = BackoffPolicy {
            factor: 0.0,
            ..BackoffPolicy::default()
        };
        assert_eq!(p.nominal(3), Duration::ZERO);
    }

    #[test]
    fn trackers_saturate() {
        let p = BackoffPolicy {
            base: Duration::MAX,
            max: Duration::MAX,
            factor: 2.0,
            jitter: 0.9,
        };
        let mut t = RestartTracker::new(p, Duration::MAX);
        let t0 = Instant::now();
        t.attempt = u32::MAX;
        t.on_up(t0);
        assert_eq!(t.on_failure(t0, 1.0, true), Duration::MAX);
        assert_eq!(t.attempt(), u32::MAX);
        assert!(!t.is_stable(t0));
        let mut i = RestartIntensity::new(u32::MAX, Duration::MAX);
        assert_eq!(i.record(t0), None);
        let mut i = RestartIntensity::new(0, Duration::ZERO);
        assert_eq!(i.record(t0), Some(1));
    }
}
