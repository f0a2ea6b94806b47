//! Multi-key commands across cluster slots: `MGET`, `DEL`, `EXISTS`, `UNLINK`, `TOUCH` and `MSET`
//! whose keys hash to several slots are split into one command per slot; every part goes through
//! the delivery loop on its own (so a redirect or a lost connection of one part concerns that
//! part alone, under the same rules), the parts at once — those of one node pipeline on its
//! connection — and their answers are recombined: `MGET` in key order, the counts summed, `MSET`
//! `OK`. `MSET` split is not atomic across slots.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use redis::Value;

use super::{HandleCore, Plan};
use crate::error::Error;
use crate::request::Request;
use crate::topology::cluster::key_slot;

/// How a split command's parts recombine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// `MGET`: the values, in key order.
    Values,
    /// `DEL`, `EXISTS`, `UNLINK`, `TOUCH`: the counts, summed.
    Sum,
    /// `MSET`: `OK`.
    Ok,
}

/// One part's delivery: its slot and its answer.
type Part<'a> = Pin<Box<dyn Future<Output = (u16, Result<Value, Error>)> + Send + 'a>>;

/// A multi-key command whose keys hash to several slots, as one command per slot.
pub(super) struct Split {
    combine: Combine,
    /// Per slot: its command and the positions (in the caller's key order) of its keys.
    parts: BTreeMap<u16, (Request, Vec<usize>)>,
    keys: usize,
}

impl Split {
    /// The parts of `plan`'s command, when it is a splittable command over more than one slot
    /// (and not pinned to a node).
    pub(super) fn of(plan: &Plan<'_>) -> Option<Split> {
        let request = plan.request;
        if request.node().is_some() {
            return None;
        }
        let cmd = request.as_cmd()?;
        let mut args = crate::command::args(cmd);
        let name = args.next()?;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let (combine, step) = if is(b"MGET") {
            (Combine::Values, 1)
        } else if is(b"MSET") {
            (Combine::Ok, 2)
        } else if is(b"DEL") || is(b"EXISTS") || is(b"UNLINK") || is(b"TOUCH") {
            (Combine::Sum, 1)
        } else {
            return None;
        };
        let rest: Vec<&[u8]> = args.collect();
        if rest.is_empty() || rest.len() % step != 0 {
            return None;
        }
        let first = key_slot(rest[0]);
        if rest.chunks(step).all(|c| key_slot(c[0]) == first) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let mut parts: BTreeMap<u16, (redis::Cmd, Vec<usize>)> = BTreeMap::new();
        for (i, chunk) in rest.chunks(step).enumerate() {
            let (part, positions) = parts
                .entry(key_slot(chunk[0]))
                .or_insert_with(|| (redis::cmd(name), Vec::new()));
            for a in chunk {
                part.arg(*a);
            }
            positions.push(i);
        }
        let label = request.label();
        Some(Split {
            combine,
            parts: parts
                .into_iter()
                .map(|(slot, (cmd, positions))| (slot, (Request::typed(cmd, label), positions)))
                .collect(),
            keys: rest.len() / step,
        })
    }

    /// Delivers every part at once, each through the loop, and recombines their answers. A part
    /// that may have run outranks one that did not in the answer (`Ambiguous` first).
    pub(super) async fn run(self, core: &HandleCore, plan: &Plan<'_>) -> Result<Value, Error> {
        let deliveries: Vec<Part<'_>> = self
            .parts
            .iter()
            .map(|(slot, (request, _))| {
                let part = Plan {
                    request,
                    replay_safe: plan.replay_safe,
                    via: plan.via,
                    budget: plan.budget,
                    deadline: plan.deadline,
                    offline: plan.offline,
                    block: None,
                    durability: plan.durability,
                };
                let slot = *slot;
                Box::pin(async move { (slot, core.attempts(&part).await) }) as Part<'_>
            })
            .collect();
        let mut answers = BTreeMap::new();
        let mut failure: Option<Error> = None;
        for (slot, result) in join_all(deliveries).await {
            match result {
                Ok(value) => {
                    answers.insert(slot, value);
                }
                Err(e) if e.is_ambiguous() => failure = Some(e),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        combine(self.combine, self.keys, &self.parts, answers)
    }
}

/// Every future's output, in order, the futures polled together on this task.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(out) => *output = Some(out),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The split command's answer from its parts' (by slot).
fn combine(
    combine: Combine,
    keys: usize,
    parts: &BTreeMap<u16, (Request, Vec<usize>)>,
    answers: BTreeMap<u16, Value>,
) -> Result<Value, Error> {
    match combine {
        Combine::Ok => Ok(Value::Okay),
        Combine::Sum => {
            let mut sum = 0i64;
            for v in answers.into_values() {
                let v = v.extract_error().map_err(crate::error::from_reply_error)?;
                sum += redis::from_redis_value::<i64>(v)
                    .map_err(|e| Error::ReplyType(e.to_string()))?;
            }
            Ok(Value::Int(sum))
        }
        Combine::Values => {
            let mut out = vec![Value::Nil; keys];
            for (slot, value) in answers {
                let Some((_, positions)) = parts.get(&slot) else {
                    continue;
                };
                let Value::Array(values) = value else {
                    return Err(Error::ReplyType(format!(
                        "MGET part for slot {slot} did not answer an array"
                    )));
                };
                for (p, v) in positions.iter().zip(values) {
                    if let Some(slot) = out.get_mut(*p) {
                        *slot = v;
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OfflinePolicy;
    use crate::delivery::Via;
    use tokio::time::Instant;

    fn plan(request: &Request) -> Plan<'_> {
        Plan {
            request,
            replay_safe: true,
            via: Via::Shared,
            budget: std::time::Duration::from_secs(1),
            deadline: Instant::now(),
            offline: OfflinePolicy::Wait,
            block: None,
            durability: None,
        }
    }

    fn args(request: &Request) -> usize {
        request
            .as_cmd()
            .map_or(0, |c| crate::command::args(c).count())
    }

    #[test]
    fn split_commands_are_those_over_several_slots() {
        let of = |cmd: &redis::Cmd| Split::of(&plan(&Request::raw(cmd.clone())));
        let mut mget = redis::cmd("MGET");
        mget.arg("a").arg("b").arg("c");
        let split = of(&mget).expect("a, b, c are on 3 slots");
        assert_eq!(split.parts.len(), 3);
        assert_eq!(split.keys, 3);
        let mut tagged = redis::cmd("del");
        tagged.arg("{u}a").arg("{u}b");
        assert!(of(&tagged).is_none());
        // MSET: only the keys count, not the values; each part keeps its pairs.
        let mut mset = redis::cmd("MSET");
        mset.arg("{u}a").arg("x").arg("{u}b").arg("y");
        assert!(of(&mset).is_none());
        let mut mset = redis::cmd("MSET");
        mset.arg("a").arg("1").arg("b").arg("2");
        let split = of(&mset).expect("two slots");
        let sent: usize = split.parts.values().map(|(r, _)| args(r)).sum();
        assert_eq!(sent, 6, "MSET k v per part");
        let mut get = redis::cmd("GET");
        get.arg("a");
        assert!(of(&get).is_none());
    }
}
