//! Deadlines for commands in flight, coalesced so that they do not all contend for tokio's timer.
//!
//! Every command's reply is awaited against its deadline. One tokio timer per command costs a
//! process-wide lock to register it and another to cancel it (tokio 1.x's timer wheel), and at
//! high concurrency that lock is the largest per-command cost the handle adds (`cargo bench
//! --bench overhead`). Instead, commands whose deadlines fall in the same tick ([`TICK_MS`],
//! 10 ms) on one worker thread share one [`Group`]: one timer task that wakes them all at the
//! start of that tick (never after their deadline: the tick is rounded down). A command still
//! waiting then finishes the last fraction of the tick on a timer of its own — only commands
//! that are really about to time out pay for one. Short deadlines (under two ticks) use a timer
//! of their own from the start, and so do long ones (over a minute): a group's timer task lives
//! until its tick, so after a shutdown such tasks end within the longest command timeout.
//!
//! Why 10 ms and not 1: a group costs a spawned task and a timer that fires, whether or not
//! anyone still waits on it (healthy commands are long answered by then). At a low command rate
//! a 1 ms tick made nearly one group per command: at C = 1, one sitting of `cargo bench --bench
//! throughput` measured 10–14 µs more client CPU per GET than raw redis-rs with 1 ms groups, and
//! 0–4 µs more with no deadline at all. At 10 ms there are a tenth as many groups, and the
//! precision is unchanged (the last fraction is always on a timer of its own).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A deadline this far away stands for "no deadline" (`with_timeout(Duration::MAX)`).
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `start + timeout`, saturating at [`FOREVER`] instead of overflowing.
pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout.min(FOREVER))
        .or_else(|| start.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(start)
}

/// Deadline resolution of a group, in milliseconds.
const TICK_MS: u64 = 10;

/// Deadlines closer than this get a timer of their own: a group would wake them most of the way
/// early, and they would take one anyway.
const SHORT: Duration = Duration::from_millis(20);

/// Deadlines further than this get a timer of their own too: a group's timer task lives until
/// its tick, and only deadlines this close keep that short.
const LONG: Duration = Duration::from_secs(60);

/// Groups each worker thread keeps at hand (for a few different deadlines at once).
const KEPT: usize = 4;

/// The instant ticks are counted from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Commands whose deadlines fall in one tick: woken together when it begins.
struct Group {
    /// Set (before waking the waiters) once the tick has begun, or once the group's timer
    /// task was dropped unfired (its runtime shut down): waiters then use timers of their own.
    fired: AtomicBool,
    wake: Notify,
}

/// Owned by a group's timer task: fires the group when the task ends, however it ends.
struct FireOnDrop(Arc<Group>);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.wake.notify_waiters();
    }
}

/// A kept group and its tick (`None`: none kept in this place yet).
type Kept = Option<(u64, Arc<Group>)>;

thread_local! {
    /// The groups this thread created last, by tick.
    static GROUPS: RefCell<[Kept; KEPT]> = const { RefCell::new([const { None }; KEPT]) };
}

/// Ticks per second (a tick divides a second exactly).
const TICKS_PER_SEC: u64 = 1000 / TICK_MS;
const _: () = assert!(1000 % TICK_MS == 0);

/// The tick `deadline` falls in (rounded down), counted from [`EPOCH`]. In `u64`s: the
/// `u128` of `Duration::as_millis` made this a 128-bit division per command.
fn tick_of(deadline: Instant) -> Option<u64> {
    let since = deadline.saturating_duration_since(*EPOCH);
    since
        .as_secs()
        .checked_mul(TICKS_PER_SEC)?
        .checked_add(u64::from(since.subsec_millis()) / TICK_MS)
}

/// The group of tick `tick`, from this thread's kept groups or new (with its timer task).
fn group(tick: u64) -> Option<Arc<Group>> {
    GROUPS
        .try_with(|kept| {
            let mut kept = kept.try_borrow_mut().ok()?;
            if let Some((_, g)) = kept
                .iter()
                .flatten()
                .find(|(t, g)| *t == tick && !g.fired.load(Ordering::SeqCst))
            {
                return Some(g.clone());
            }
            // A new group needs a runtime for its timer task (checked only here: `try_current`
            // clones the runtime handle, too dear for every command).
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let at = EPOCH.checked_add(Duration::from_millis(tick.checked_mul(TICK_MS)?))?;
            let g = Arc::new(Group {
                fired: AtomicBool::new(false),
                wake: Notify::new(),
            });
            let fire = FireOnDrop(g.clone());
            runtime.spawn(async move {
                tokio::time::sleep_until(at).await;
                drop(fire);
            });
            // Replace the group of the earliest tick (an empty place first).
            let place = kept
                .iter_mut()
                .min_by_key(|k| k.as_ref().map_or(0, |(t, _)| t.saturating_add(1)))?;
            *place = Some((tick, g.clone()));
            Some(g)
        })
        .ok()
        .flatten()
}

/// Awaits `fut` until `deadline`, which is `remaining` from now (the caller has both at hand:
/// a command's first attempt starts with its whole timeout left): `Some(output)`, or `None`
/// once the deadline has passed (never later than it). `remaining` only chooses between a
/// group and a timer of its own; the deadline alone decides when to give up.
///
/// `fut` comes pinned where the caller made it: a command's future is large (redis-rs's send
/// future is most of it), and taking it by value would store it twice more in this future and
/// copy it each time.
pub(crate) async fn within<F: Future>(
    remaining: Duration,
    deadline: Instant,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    let coalesce = (SHORT..=LONG).contains(&remaining);
    let shared = coalesce.then(|| group(tick_of(deadline)?)).flatten();
    if let Some(group) = shared {
        let mut woken = std::pin::pin!(group.wake.notified());
        if !group.fired.load(Ordering::SeqCst) {
            // The command first, then the group (what a biased `select!` does, without its
            // per-poll bookkeeping: this runs for every command).
            let out = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending => woken.as_mut().poll(cx).map(|()| None),
            })
            .await;
            if out.is_some() {
                return out;
            }
        }
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_before_the_deadline_and_never_after_it() {
        let now = Instant::now();
        assert_eq!(
            within(
                Duration::from_secs(5),
                now + Duration::from_secs(5),
                pin!(async { 7 })
            )
            .await,
            Some(7)
        );
        for ms in [1u64, 3, 10, 25, 60] {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(ms);
            let never = std::future::pending::<()>();
            assert_eq!(
                within(Duration::from_millis(ms), deadline, pin!(never)).await,
                None,
                "{ms} ms"
            );
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms: woke early, after {took:?}"
            );
            assert!(
                took < Duration::from_millis(ms + 200),
                "{ms} ms: late, after {took:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_commands_share_groups_and_each_gets_its_own_answer() {
        let start = Instant::now();
        let tasks: Vec<_> = (0..500u64)
            .map(|i| {
                tokio::spawn(async move {
                    let now = Instant::now();
                    let deadline = now + Duration::from_millis(20 + i % 7);
                    let reply =
                        tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 1 } else { 500 }));
                    (
                        i,
                        within(deadline - now, deadline, pin!(reply))
                            .await
                            .is_some(),
                        now,
                        deadline,
                    )
                })
            })
            .collect();
        for t in tasks {
            let (i, answered, _, deadline) = t.await.unwrap();
            assert_eq!(answered, i % 2 == 0, "command {i}");
            if !answered {
                assert!(Instant::now() >= deadline);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_group_whose_runtime_is_gone_fires_so_nothing_waits_on_it() {
        // A group created on a runtime that then shut down.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = rt.block_on(async { Instant::now() + Duration::from_secs(30) });
        let tick = tick_of(deadline).unwrap();
        let g = rt.block_on(async { group(tick).unwrap() });
        drop(rt);
        assert!(
            g.fired.load(Ordering::SeqCst),
            "its timer task was dropped: it fired"
        );
        // The same thread, a new runtime, the same tick: a fresh group, a real wait.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let fresh = group(tick).unwrap();
            assert!(!Arc::ptr_eq(&fresh, &g) && !fresh.fired.load(Ordering::SeqCst));
        });
    }

    #[test]
    fn a_tick_begins_at_or_before_its_deadlines_and_less_than_a_tick_before() {
        let epoch = *EPOCH;
        for ms in [
            0u64,
            1,
            9,
            10,
            11,
            999,
            1000,
            1001,
            1009,
            1010,
            86_399_999,
            31_536_000_123,
        ] {
            for extra_ns in [0u32, 1, 999_999] {
                let since = Duration::from_millis(ms) + Duration::from_nanos(u64::from(extra_ns));
                let tick = tick_of(epoch + since).unwrap();
                assert_eq!(tick, ms / TICK_MS, "{since:?}");
                let begins = Duration::from_millis(tick * TICK_MS);
                assert!(begins <= since && since - begins < Duration::from_millis(TICK_MS));
            }
        }
        // Before the epoch: the first tick (it has begun, so such a deadline gets its own timer).
        if let Some(earlier) = epoch.checked_sub(Duration::from_secs(1)) {
            assert_eq!(tick_of(earlier), Some(0));
        }
    }
}
