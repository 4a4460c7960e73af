//! Dynamic batching shared by all in-flight jobs.
//!
//! Three parts, kept apart as in TGI's router:
//! - the **policy**, [`next_batch`]: a pure function of the queue, the clock and the
//!   engine's free replicas that says whether to cut a batch now, and which texts;
//! - the **queue task** ([`spawn`]): owns the FIFO queue, merges identical texts, asks
//!   the policy, and hands each batch to an idle replica;
//! - the **replica threads**: one OS thread per engine replica, calling the blocking
//!   [`Backend`] so inference never runs on the async runtime.
//!
//! # Lanes
//!
//! Every text is [`Lane::Interactive`] (a person waits) or [`Lane::Bulk`]. Texts enter
//! through one channel per lane, each with its own room in the queue, so a bulk
//! backlog can neither hold interactive texts outside the queue nor fill it. When a
//! replica frees, the policy cuts from the interactive texts first (the same
//! length-sorted runs, among them), and tops a batch that is not full up with the bulk
//! texts closest below its longest, so interactive work rides along bulk work
//! instead of displacing it; a bulk-led batch no larger than an interactive-led one
//! likewise carries queued interactive texts that widen nothing. Batches that hold
//! interactive texts keep to [`Policy::interactive_max_batch_tokens`], because a
//! batch's duration follows its size and its longest text (one decoding step per
//! target token). Bulk texts never starve: after
//! [`Policy::interactive_burst`] batches in a row led by interactive texts while bulk
//! texts wait, the next batch is cut from the bulk texts. Identical texts merge and
//! take the higher lane.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Metrics;
use crate::translate::CacheKey;
use crate::translate::{Backend, EngineError, Translation};
use translation_client::wire::DecodeOptions;
pub use translation_client::Lane;

/// Errors a submitted text can meet.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The engine failed on this text (also when translated alone).
    #[error("engine failed: {0}")]
    Engine(String),
    /// The batcher has stopped.
    #[error("batcher stopped")]
    Closed,
}

/// When to cut a batch, and which texts it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most distinct texts in a batch.
    pub max_batch_size: usize,
    /// Fewest texts a batch is made of when more are in flight: the batch size adapts
    /// to the load ([`batch_size`]), between this and `max_batch_size`, so that as many
    /// texts wait to be sorted as run. Equal to `max_batch_size`: a fixed size.
    pub min_batch_size: usize,
    /// Most padded tokens (texts × longest source) in a batch; a single longer text
    /// still goes alone.
    pub max_batch_tokens: usize,
    /// Longest a text waits for a fuller batch while some replica is busy.
    pub max_wait: Duration,
    /// Longest a text may be passed over for batches of better-matched texts. Younger
    /// than this, the batcher cuts whichever full batch pads least among everything it
    /// holds; once the oldest text is this old, the next batch is the one holding it.
    /// Zero: every batch holds the oldest text.
    pub max_delay: Duration,
    /// Most distinct texts of each lane the queue task holds to choose from (the
    /// sorting window; at least a full batch per replica, [`window`]). Submitters wait
    /// beyond it.
    pub max_queued: usize,
    /// Longest the oldest bulk text waits for a burst to end before a batch is cut
    /// while some replica is busy: as long as bulk texts keep arriving (each within
    /// `settle_gap` of the one before) and the window has room, no bulk batch is cut,
    /// so a burst of jobs is sorted whole instead of cut as its first texts arrive.
    /// Never past `max_delay`; zero: off. Interactive texts never wait for it.
    pub max_settle: Duration,
    /// The pause in bulk arrivals that ends a burst ([`Policy::max_settle`]). Longer
    /// than `max_wait`: with one replica computing on a 2-core machine, the jobs of a
    /// backlog reach the batcher with pauses of several milliseconds between them
    /// (the broker, Redis and the job tasks share the other core), and a burst wait
    /// that ended at the first such pause cut a small unsorted batch
    /// (docs/benchmarks-history.md). Also how long a freed replica waits for the texts its
    /// answers bring back ([`next_lane_batch`]'s `freed_at`).
    pub settle_gap: Duration,
    /// Most batches in a row led by interactive texts while bulk texts wait (at
    /// least 1): the next batch is then cut from the bulk texts alone. See
    /// [`next_lane_batch`] for the bounds this gives.
    pub interactive_burst: usize,
    /// Most padded tokens in a batch led by interactive texts (the interactive run and
    /// its bulk top-up; at most `max_batch_tokens`, which a larger value means). Such a
    /// batch is what a waiting person's text runs in: kept shorter than a full bulk
    /// batch, it bounds their latency to a replica's wait plus a short batch.
    pub interactive_max_batch_tokens: usize,
}

/// What the policy needs to know about a queued text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Source length in tokens.
    pub tokens: usize,
    /// Decoding options; a batch shares one set.
    pub options: DecodeOptions,
    /// When it entered the queue.
    pub enqueued: Instant,
    /// Its lane (merged texts: the higher of theirs).
    pub lane: Lane,
}

/// The policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing queued.
    Idle,
    /// Texts are queued but every replica is busy.
    WaitForEngine,
    /// Wait for more texts, but cut at this instant at the latest.
    WaitUntil(Instant),
    /// Cut a batch of these queue positions (ascending).
    Cut(Vec<usize>),
}

/// A run of texts that are neighbours in length order: `sorted[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    /// Padded tokens: texts × longest.
    padded: usize,
    /// Real tokens.
    real: usize,
    /// Whether it holds as much as a batch may: `max_batch_size` texts, or the next
    /// text in length order would break `max_batch_tokens`.
    full: bool,
}

impl Run {
    /// `self` pads less than `other`, relative to the work it carries (real tokens);
    /// compared exactly by cross-multiplication. An all-empty run pads nothing.
    fn pads_less_than(&self, other: &Run) -> bool {
        let waste = |r: &Run| (r.padded - r.real) as u128;
        let real = |r: &Run| r.real.max(1) as u128;
        waste(self) * real(other) < waste(other) * real(self)
    }
}

/// Cuts `lens` (sorted longest first) into consecutive runs, each as large as a batch
/// may be: CTranslate2's own sort-then-cut (it too cuts from the longest). Only the
/// last run, the shortest texts, can be less than full.
fn partition(lens: &[usize], max_size: usize, max_tokens: usize) -> Vec<Run> {
    let n = lens.len();
    let max_size = max_size.max(1);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < n {
        // Longest first: the run's first text sets its padded width. A text alone
        // always fits, even over the token budget.
        let width = lens[start];
        let mut end = start + 1;
        let mut real = width;
        while end < n
            && end - start < max_size
            && width.saturating_mul(end + 1 - start) <= max_tokens
        {
            real += lens[end];
            end += 1;
        }
        runs.push(Run {
            start,
            end,
            padded: width.saturating_mul(end - start),
            real,
            // It stopped short of the last text: count or budget.
            full: end - start >= max_size || end < n,
        });
        start = end;
    }
    runs
}

/// The batch size for `queued` texts waiting and `running` texts in batches on
/// `replicas` replicas, between `min_batch_size` and `max_batch_size`: the larger of
/// - half of each replica's share of the texts in flight (queued and running), so
///   that while one batch runs per replica as many texts wait to be chosen from by
///   length (a closed loop: 64 in flight on 2 replicas gives 16, so 32 with the
///   default minimum, not one batch of 64 and an idle replica), and
/// - each replica's share of `queued`: texts already held need no sorting room kept
///   for texts to come, so a held backlog is cut in full batches until what is left
///   is shared between the replicas (the half-share alone shrank the batches while a
///   backlog drained: 11 batches and 5 % slower than CTranslate2's own cut of the same
///   600 sentences, docs/benchmarks-history.md).
pub fn batch_size(policy: &Policy, queued: usize, running: usize, replicas: usize) -> usize {
    let max = policy.max_batch_size.max(1);
    let min = policy.min_batch_size.clamp(1, max);
    let replicas = replicas.max(1);
    (queued + running)
        .div_ceil(2 * replicas)
        .max(queued.div_ceil(replicas))
        .clamp(min, max)
}

/// The most distinct texts of each lane the queue task holds: `max_queued`, and at
/// least a full batch per replica so that every replica can be given one.
pub fn window(policy: &Policy, replicas: usize) -> usize {
    policy
        .max_queued
        .max(policy.max_batch_size.saturating_mul(replicas.max(1)))
}

/// Decides whether to cut a batch now, and which texts (pure: no clock, no I/O), for
/// a queue with no batch led by interactive texts just before: [`next_lane_batch`]
/// with an `interactive_streak` of 0. On a queue of bulk texts only (every producer
/// that names no lane), this is the single-lane policy below.
///
/// The texts that share the oldest text's options are sorted by length and cut into
/// runs as CTranslate2 cuts one large call (longest first, each run up to
/// `max_batch_size` texts and `max_batch_tokens` padded tokens): a batch is always
/// one of these runs, so its texts are of similar length (little padding, and decoder
/// steps that keep every row busy), and taking whole runs leaves the others intact.
/// Which run:
/// - while the oldest text is younger than `max_delay`, the **full** run that pads
///   least relative to its real tokens (ties: the one holding the oldest text), cut at
///   once;
/// - otherwise (the oldest is overdue, or no run is full yet), the run holding the
///   oldest text. It is cut when full, when the oldest has waited `max_wait`, or at
///   once when every replica is idle (a lone job on an idle worker never waits).
///
/// Before either, while some replica is busy, the oldest is younger than `max_delay`
/// and `max_settle`, bulk texts are still arriving (the newest came within `settle_gap`)
/// and the lane's window has room, a burst is under way: no bulk batch is cut until it
/// ends, so its texts are sorted together. Without this, a busy worker's free replica
/// took what had arrived first (4–8 texts of any length after `max_wait`, or the
/// first full run), unsorted (docs/benchmarks-history.md).
///
/// Bound: once the oldest queued text has waited `max(max_delay, max_wait)`, the next
/// batch cut holds it; so a text is batched at most one cut per older text still
/// queued then (each such cut takes the then-oldest) after that.
pub fn next_batch<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    now: Instant,
    policy: &Policy,
    free_replicas: usize,
    total_replicas: usize,
    in_batches: usize,
) -> Decision {
    next_lane_batch(
        queue,
        now,
        policy,
        free_replicas,
        total_replicas,
        in_batches,
        0,
        None,
        0,
    )
}

/// [`next_batch`] over two lanes; `interactive_streak` is the number of batches in a
/// row led by interactive texts while bulk texts waited (keep it with
/// [`next_streak`]).
///
/// - The **lead lane** is interactive when interactive texts are queued, unless bulk
///   texts are too and `interactive_streak` has reached `interactive_burst`; else
///   bulk. The single-lane policy ([`next_batch`]) runs over the lead lane's texts
///   alone: the same length-sorted runs, the same `max_delay` and `max_wait`.
/// - A run of interactive texts that is not full is **topped up** with bulk texts of
///   the same options no longer than its longest text (longest first, then oldest),
///   up to the batch size and token budget: the interactive text costs the bulk work
///   one place in a batch, not a batch. Topped up to full, it is cut at once.
/// - Interactive runs are cut within `interactive_max_batch_tokens` (top-up
///   included), so a waiting person's text runs in a short batch.
/// - A batch led by bulk (cut at once) that is within `interactive_max_batch_tokens`
///   lets queued interactive texts of its options **ride along** when they widen
///   nothing: in free room within the batch size and that budget, else in place of at
///   most a quarter of its shortest bulk texts, never its oldest. So every batch that
///   holds an interactive text (but one alone) is within the interactive budget.
///
/// Bounds: (1) while a replica is free and bulk texts do not have their turn, the
/// batch cut holds interactive texts whenever any are queued; (2) while bulk texts are
/// queued, at most `interactive_burst` batches in a row are led by interactive texts;
/// (3) so, once a bulk text has waited `max(max_delay, max_wait)`, it is batched within
/// `(interactive_burst + 1) × (k + 1)` cuts, `k` being the older bulk texts still queued
/// then (each bulk-led cut takes the then-oldest); an interactive text within
/// `k + 1 + ⌊k / interactive_burst⌋ + 1` cuts (`k`: older interactive texts).
///
/// `freed_at` is when the most recently freed idle replica became free: while another
/// replica is busy, a bulk run that is not full (and none is) waits until `settle_gap`
/// after it, not only `max_wait` after its oldest text (`max_settle` zero: off; never
/// past the oldest text's `max_delay`), so the freed replica takes the texts its own
/// answers bring back from clients with jobs in flight rather than the few left over.
/// The bounds above count cuts and hold unchanged.
///
/// `busy_left` is the work the busy replicas have left, in [`batch_cost`] units
/// ([`BusyEstimate`]). It shapes the **drain**: when the bulk texts held are cut into
/// batches of a replica's share each (the queue fits in at most one batch per
/// replica), the lane's texts are split so that the replicas finish together rather
/// than into equal counts: the freed replica takes the longest texts, as many as
/// make its batch cost what the others' rest will (their remaining work plus the
/// shorter batches), within `max_batch_size` and the token budget. Equal counts are
/// not equal work (decoding steps follow a batch's longest text): the last two
/// batches of a 600-job backlog, 44 texts of up to 68 tokens and 32 of up to 54, ran
/// 5.9 s and 2.7 s, and one replica idled for the difference (docs/benchmarks-history.md).
/// In a backlog every text is soon overdue; the batch cut then still holds the
/// oldest (the rest's batch that holds it, when the longest texts do not: they wait
/// for the next replica), so the bounds hold.
// The policy's inputs are plain values the queue task and the simulations keep
// separately; bundling them would only rename them at every call.
#[allow(clippy::too_many_arguments)]
pub fn next_lane_batch<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    now: Instant,
    policy: &Policy,
    free_replicas: usize,
    total_replicas: usize,
    in_batches: usize,
    interactive_streak: usize,
    freed_at: Option<Instant>,
    busy_left: u64,
) -> Decision {
    if free_replicas == 0 {
        return if queue.is_empty() {
            Decision::Idle
        } else {
            Decision::WaitForEngine
        };
    }
    let Some(lead) = lead_lane(queue, policy, interactive_streak) else {
        return Decision::Idle;
    };
    // Interactive-led batches are cut (and topped up) within their own, smaller token
    // budget.
    let interactive_policy = Policy {
        max_batch_tokens: policy
            .interactive_max_batch_tokens
            .clamp(1, policy.max_batch_tokens.max(1)),
        ..*policy
    };
    let lead_policy = match lead {
        Lane::Interactive => &interactive_policy,
        Lane::Bulk => policy,
    };
    let size = batch_size(policy, queue.len(), in_batches, total_replicas);
    // A held backlog drains: each replica's share of the queue fills a batch.
    let drain = (lead == Lane::Bulk && queue.len().div_ceil(total_replicas.max(1)) >= size)
        .then_some(busy_left);
    let Some(choice) = lane_choice(
        queue,
        now,
        lead_policy,
        (free_replicas, total_replicas),
        (freed_at, drain),
        size,
        lead,
    ) else {
        // Unreachable: the lead lane has texts. Cut the oldest text alone.
        return Decision::Cut(vec![0]);
    };
    let (mut positions, wait_until) = match choice {
        Choice::Cut(run) => (run, None),
        Choice::Wait(run, deadline) => (run, Some(deadline)),
    };
    match (lead, wait_until) {
        (Lane::Interactive, _) => {
            let full = top_up(queue, lead_policy, size, &mut positions);
            if full || wait_until.is_none() {
                positions.sort_unstable();
                return Decision::Cut(positions);
            }
        }
        (Lane::Bulk, None) => {
            // Riders only board a bulk batch no larger than an interactive-led one: a
            // full-width bulk batch runs for seconds (decoding steps follow its
            // longest text), longer than the rider would take to lead the next one.
            if width(queue, &positions).saturating_mul(positions.len())
                <= interactive_policy.max_batch_tokens
            {
                ride_along(queue, &interactive_policy, size, &mut positions);
            }
            positions.sort_unstable();
            return Decision::Cut(positions);
        }
        (Lane::Bulk, Some(_)) => {}
    }
    match wait_until {
        Some(deadline) => Decision::WaitUntil(deadline),
        None => Decision::Cut(positions),
    }
}

/// The lane that leads the next cut of `queue` ([`next_lane_batch`]): interactive when
/// interactive texts are queued, unless bulk texts are too and `interactive_streak`
/// has reached `interactive_burst`; else bulk. `None` on an empty queue. The queue
/// task reads it before a cut to keep the streak ([`next_streak`]).
pub fn lead_lane<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    policy: &Policy,
    interactive_streak: usize,
) -> Option<Lane> {
    let has = |lane: Lane| {
        queue
            .iter()
            .any(|i| Borrow::<Pending>::borrow(i).lane == lane)
    };
    let (interactive, bulk) = (has(Lane::Interactive), has(Lane::Bulk));
    let bulk_turn = bulk && interactive_streak >= policy.interactive_burst.max(1);
    if interactive && !bulk_turn {
        Some(Lane::Interactive)
    } else if bulk || interactive {
        Some(Lane::Bulk)
    } else {
        None
    }
}

/// The streak [`next_lane_batch`] reads after a cut: one more when the cut was led by
/// interactive texts (it holds one) and bulk texts are still queued, else 0.
pub fn next_streak(streak: usize, cut_held_interactive: bool, bulk_left: bool) -> usize {
    if cut_held_interactive && bulk_left {
        streak + 1
    } else {
        0
    }
}

/// What the single-lane policy chose: a run to cut now, or the run that waits until
/// the instant given (queue positions, ascending).
enum Choice {
    Cut(Vec<usize>),
    Wait(Vec<usize>, Instant),
}

/// The single-lane policy over the texts of `lane` (see [`next_batch`]); `None` when
/// the lane has no text.
fn lane_choice<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    now: Instant,
    policy: &Policy,
    (free_replicas, total_replicas): (usize, usize),
    (freed_at, drain): (Option<Instant>, Option<u64>),
    size: usize,
    lane: Lane,
) -> Option<Choice> {
    let head = queue
        .iter()
        .map(Borrow::<Pending>::borrow)
        .find(|p| p.lane == lane)?;
    // (length, queue position) of every text that may share the head's batch, longest
    // first; among equal lengths, oldest first.
    let mut sorted: Vec<(usize, usize)> = queue
        .iter()
        .enumerate()
        .map(|(i, item)| (i, Borrow::<Pending>::borrow(item)))
        .filter(|(_, item)| item.lane == lane && item.options == head.options)
        .map(|(i, item)| (item.tokens, i))
        .collect();
    sorted.sort_unstable_by_key(|&(len, i)| (std::cmp::Reverse(len), i));
    let lens: Vec<usize> = sorted.iter().map(|&(len, _)| len).collect();
    let runs = partition(&lens, size, policy.max_batch_tokens);
    let positions = |run: &Run| {
        let mut p: Vec<usize> = sorted[run.start..run.end].iter().map(|&(_, i)| i).collect();
        p.sort_unstable();
        p
    };
    // The oldest of a run: its smallest queue position.
    let oldest = |run: &Run| sorted[run.start..run.end].iter().map(|&(_, i)| i).min();
    // The head is the lane's first text in the queue, so the first of its length in
    // `sorted`; `around` is the run holding it.
    let h = sorted.partition_point(|&(len, _)| len > head.tokens);
    let Some(around) = runs.iter().find(|r| r.start <= h && h < r.end) else {
        // Unreachable: the runs cover every sorted position. Cut the head alone.
        return Some(Choice::Cut(vec![sorted.get(h).map_or(0, |&(_, i)| i)]));
    };
    let waited = now.saturating_duration_since(head.enqueued);
    let overdue = waited >= policy.max_delay;
    if lane == Lane::Bulk
        && free_replicas < total_replicas
        && !overdue
        && waited < policy.max_settle
        && queue
            .iter()
            .filter(|i| Borrow::<Pending>::borrow(*i).lane == lane)
            .count()
            < window(policy, total_replicas)
    {
        // The lane's newest text: the last of its texts in the queue.
        let newest = queue
            .iter()
            .rev()
            .map(Borrow::<Pending>::borrow)
            .find(|p| p.lane == lane)
            .map_or(head.enqueued, |p| p.enqueued);
        let settled = (newest + policy.settle_gap).min(head.enqueued + policy.max_settle);
        if now < settled {
            return Some(Choice::Wait(positions(around), settled));
        }
    }
    if let Some(busy_left) = drain {
        // An overdue head goes in the batch cut now, drain or not (the bounds).
        let hold = overdue.then_some(h);
        if let Some(run) = drain_split(&lens, policy, runs.len(), total_replicas, busy_left, hold) {
            return Some(Choice::Cut(positions(&run)));
        }
    }
    if !overdue {
        let best = runs.iter().filter(|r| r.full).reduce(|best, r| {
            if r.pads_less_than(best) || (!best.pads_less_than(r) && oldest(r) < oldest(best)) {
                r
            } else {
                best
            }
        });
        if let Some(run) = best {
            return Some(Choice::Cut(positions(run)));
        }
    }
    let mut deadline = head.enqueued + policy.max_wait;
    if let Some(freed) = freed_at.filter(|_| lane == Lane::Bulk && !policy.max_settle.is_zero()) {
        // A replica that has just freed waits `settle_gap` for the texts its answers
        // bring (a client with N jobs in flight sends the next ones as replies come
        // back): cut at once, it took the one or few texts left over and the
        // replacements waited for the next free replica, so a 64-in-flight loop ran
        // batches of 1–5 texts between its full ones (docs/benchmarks-history.md). Never past
        // the oldest text's `max_delay`.
        deadline = deadline.max((freed + policy.settle_gap).min(head.enqueued + policy.max_delay));
    }
    Some(
        if around.full || now >= deadline || free_replicas >= total_replicas {
            Choice::Cut(positions(around))
        } else {
            Choice::Wait(positions(around), deadline)
        },
    )
}

/// Source tokens' worth of work in one decoding step besides attention: each step
/// runs the layers' projections and the output layer (fixed per text) and attends
/// over the source (growing with it). Fitted to batch durations of the OPUS-MT-shaped
/// model on 2 cores (64 × 115 tokens: 16 s, 64 × 53: 7.2 s, 64 × 26: 2.8 s, within a
/// fifth); only ratios of costs matter, so it need not be exact.
const STEP_TOKENS: u64 = 200;

/// Estimated work of a batch of `texts` texts padded to `width` source tokens, in
/// arbitrary units: about `width` decoding steps (a translation is about as long as
/// its source), each costing every row `width + STEP_TOKENS`.
pub fn batch_cost(texts: usize, width: usize) -> u64 {
    let width = width as u64;
    (texts as u64)
        .saturating_mul(width)
        .saturating_mul(width.saturating_add(STEP_TOKENS))
}

/// The drain split ([`next_lane_batch`]'s `busy_left`): for `lens` (the lane's texts,
/// longest first) that the count rule cuts into `runs` batches, at least 2 and at
/// most one per replica, the batch the freed replica takes now so that the replicas
/// finish as early as the estimate allows. The texts are split in length order into
/// the longest `k` and the rest (shared by count among `runs - 1` batches); the freed
/// replica takes the longest `k` and the others, what they have left (`busy_left`)
/// and then the rest. `hold`: the sorted index of an overdue text the batch must
/// hold (the bounds); where it is in the rest, the freed replica takes the rest's
/// batch that holds it, and the longest `k` wait for the others. `None` outside a
/// drain.
fn drain_split(
    lens: &[usize],
    policy: &Policy,
    runs: usize,
    total_replicas: usize,
    busy_left: u64,
    hold: Option<usize>,
) -> Option<Run> {
    let n = lens.len();
    if runs < 2 || runs > total_replicas {
        return None;
    }
    let max_size = policy.max_batch_size.max(1);
    let fits = |count: usize, width: usize| {
        count <= max_size && (count == 1 || width.saturating_mul(count) <= policy.max_batch_tokens)
    };
    let others = (runs - 1) as u64;
    // (finish, padded, the batch cut now as sorted start..end)
    let mut best: Option<(u64, usize, usize, usize)> = None;
    for k in 1..=n.min(max_size) {
        if !fits(k, lens[0]) {
            break;
        }
        // The rest, cut by count into `runs - 1` batches (longest first).
        let per = (n - k).div_ceil(runs - 1).max(1);
        let mut batches = vec![(0, k)];
        let mut start = k;
        while start < n {
            let end = (start + per).min(n);
            batches.push((start, end));
            start = end;
        }
        if !batches[1..].iter().all(|&(s, e)| fits(e - s, lens[s])) {
            continue;
        }
        let cost = |&(s, e): &(usize, usize)| batch_cost(e - s, lens[s]);
        let total: u64 = batches.iter().map(cost).fold(0, u64::saturating_add);
        // The freed replica's batch: the longest, or the one holding `hold`.
        let Some(&now) = batches
            .iter()
            .find(|&&(s, e)| hold.is_none_or(|h| s <= h && h < e))
        else {
            continue;
        };
        let mine = cost(&now);
        let finish = mine.max(busy_left.saturating_add(total - mine).div_ceil(others));
        let padded: usize = batches.iter().map(|&(s, e)| lens[s] * (e - s)).sum();
        // Earliest finish; then least padding; then the larger batch now.
        if best.is_none_or(|(f, p, _, _)| (finish, padded) <= (f, p)) {
            best = Some((finish, padded, now.0, now.1));
        }
    }
    let (_, _, start, end) = best?;
    Some(Run {
        start,
        end,
        padded: lens[start] * (end - start),
        real: lens[start..end].iter().sum(),
        full: true,
    })
}

/// What the busy replicas have left to do, in [`batch_cost`] units: the queue task
/// records each batch's cost when it starts and learns the engine's speed (time per
/// unit) from the batches that finish.
#[derive(Debug, Clone)]
pub struct BusyEstimate {
    /// Per replica: when its running batch started, and its cost.
    running: Vec<Option<(Instant, u64)>>,
    /// Decayed sums of finished batches' seconds and costs: their ratio is the speed,
    /// weighted to large and recent batches.
    seconds: f64,
    units: f64,
}

impl BusyEstimate {
    /// No batch running or finished yet on `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self {
            running: vec![None; replicas],
            seconds: 0.0,
            units: 0.0,
        }
    }

    /// `replica` started a batch of `cost` units at `at`.
    pub fn started(&mut self, replica: usize, at: Instant, cost: u64) {
        if let Some(slot) = self.running.get_mut(replica) {
            *slot = Some((at, cost));
        }
    }

    /// `replica` finished its batch at `at`.
    pub fn finished(&mut self, replica: usize, at: Instant) {
        if let Some((start, cost)) = self.running.get_mut(replica).and_then(Option::take) {
            // Halve the weight of the past every two batches: the machine's speed
            // drifts (other load, turbo), and the drain needs today's.
            const KEEP: f64 = 0.7;
            self.seconds = self.seconds * KEEP + at.saturating_duration_since(start).as_secs_f64();
            self.units = self.units * KEEP + cost as f64;
        }
    }

    /// The units the running batches have left at `now`: each batch's cost less what
    /// its time so far did at the learnt speed (the whole cost before any finished).
    pub fn left(&self, now: Instant) -> u64 {
        let per_second = (self.seconds > 0.0).then(|| self.units / self.seconds);
        self.running
            .iter()
            .flatten()
            .map(|&(start, cost)| {
                let done = per_second.map_or(0.0, |speed| {
                    now.saturating_duration_since(start).as_secs_f64() * speed
                });
                (cost as f64 - done).max(0.0) as u64
            })
            .sum()
    }
}

/// The longest source among the texts at `positions` (0 for none).
fn width<T: Borrow<Pending>>(queue: &VecDeque<T>, positions: &[usize]) -> usize {
    positions
        .iter()
        .filter_map(|&i| queue.get(i).map(Borrow::<Pending>::borrow))
        .map(|p| p.tokens)
        .max()
        .unwrap_or(0)
}

/// Tops the interactive run at `positions` up with bulk texts of its options no longer
/// than its longest (longest first, then oldest), within `size` texts and the token
/// budget. Returns whether the batch is then full.
fn top_up<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    policy: &Policy,
    size: usize,
    positions: &mut Vec<usize>,
) -> bool {
    let item = |i: usize| queue.get(i).map(Borrow::<Pending>::borrow);
    let Some(first) = positions.first().and_then(|&i| item(i)) else {
        return true;
    };
    let options = first.options;
    let width = width(queue, positions);
    let room = |count: usize| {
        count < size.max(1) && width.saturating_mul(count + 1) <= policy.max_batch_tokens
    };
    if !room(positions.len()) {
        return true;
    }
    let mut fill: Vec<(usize, usize)> = queue
        .iter()
        .enumerate()
        .map(|(i, q)| (i, Borrow::<Pending>::borrow(q)))
        .filter(|(_, p)| p.lane == Lane::Bulk && p.options == options && p.tokens <= width)
        .map(|(i, p)| (p.tokens, i))
        .collect();
    fill.sort_unstable_by_key(|&(len, i)| (std::cmp::Reverse(len), i));
    for (_, i) in fill {
        if !room(positions.len()) {
            break;
        }
        positions.push(i);
    }
    !room(positions.len())
}

/// Lets the queued interactive texts of its options ride along the bulk-led batch at
/// `positions` (cut now; the bulk policy's choice): oldest first, each no longer than
/// the batch's longest text (so it widens nothing). A rider takes free room while the
/// batch stays within `size` texts and `policy`'s token budget (the caller passes the
/// interactive one); else it takes the place of
/// one of the batch's shortest bulk texts, which stays queued for a later batch. At
/// most a quarter of the batch is displaced, and never its oldest text, so a bulk
/// batch still does mostly bulk work and the bulk bounds hold. On bulk's turn the
/// riders start at once instead of waiting for the next free replica.
fn ride_along<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    policy: &Policy,
    size: usize,
    positions: &mut Vec<usize>,
) {
    let item = |i: usize| queue.get(i).map(Borrow::<Pending>::borrow);
    let Some(oldest) = positions.iter().copied().min() else {
        return;
    };
    let Some(options) = item(oldest).map(|p| p.options) else {
        return;
    };
    let width = width(queue, positions);
    // Riders are no wider than `width`, so the padded size is width × count.
    let room = |count: usize| {
        count < size.max(1) && width.saturating_mul(count + 1) <= policy.max_batch_tokens
    };
    let mut displaceable = positions.len() / 4;
    let riders: Vec<usize> = queue
        .iter()
        .enumerate()
        .filter(|(_, q)| {
            let p = Borrow::<Pending>::borrow(*q);
            p.lane == Lane::Interactive && p.options == options && p.tokens <= width
        })
        .map(|(i, _)| i)
        .collect();
    for rider in riders {
        if room(positions.len()) {
            positions.push(rider);
            continue;
        }
        if displaceable == 0 {
            break;
        }
        // The shortest bulk text but the oldest (the newest among equals) makes room.
        let out = positions
            .iter()
            .enumerate()
            .filter(|&(_, &i)| i != oldest && item(i).is_some_and(|p| p.lane == Lane::Bulk))
            .min_by_key(|&(_, &i)| (item(i).map_or(0, |p| p.tokens), std::cmp::Reverse(i)))
            .map(|(k, _)| k);
        match out {
            Some(k) => {
                positions[k] = rider;
                displaceable -= 1;
            }
            None => break,
        }
    }
}

/// One text submitted for translation.
struct Submission {
    key: CacheKey,
    tokens: Vec<String>,
    /// Target-language token a multilingual model must start with.
    prefix: Option<String>,
    options: DecodeOptions,
    lane: Lane,
    waiter: Waiter,
}

/// Someone awaiting a translation: where to send it, and the span of the job that
/// asked, so the batch's span can link back to every job it served.
struct Waiter {
    reply: oneshot::Sender<Result<Translation, BatchError>>,
    span: tracing::Span,
}

impl Waiter {
    /// Answers; a waiter that gave up (deadline) has dropped its receiver, which is fine.
    fn send(self, result: Result<Translation, BatchError>) {
        let _ = self.reply.send(result);
    }
}

/// A queued, distinct text.
struct Queued {
    pending: Pending,
    key: CacheKey,
    tokens: Vec<String>,
    prefix: Option<String>,
}

impl Borrow<Pending> for Queued {
    fn borrow(&self) -> &Pending {
        &self.pending
    }
}

/// A batch on its way to a replica thread.
struct Batch {
    options: DecodeOptions,
    /// Sorted by source length (less padding work when CTranslate2 drops finished rows).
    sources: Vec<Vec<String>>,
    /// `prefixes[i]`: target-language token of `sources[i]`; empty when none has one.
    prefixes: Vec<Option<String>>,
    /// `waiters[i]` receive the translation of `sources[i]` (several when merged).
    waiters: Vec<Vec<Waiter>>,
}

/// Submits texts to the batcher. Cheap to clone; the batcher stops when every handle
/// is dropped and the queue has drained.
#[derive(Clone)]
pub struct BatcherHandle {
    /// One channel per lane (index: [`lane_index`]), so bulk texts waiting to enter
    /// never queue in front of interactive ones.
    tx: [mpsc::Sender<Submission>; 2],
}

/// Index of a lane in per-lane arrays: bulk 0, interactive 1.
pub fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Bulk => 0,
        Lane::Interactive => 1,
    }
}

impl BatcherHandle {
    /// Translates one tokenized text in the bulk lane. `key` identifies identical
    /// requests, which are translated once.
    pub async fn translate(
        &self,
        key: CacheKey,
        tokens: Vec<String>,
        options: DecodeOptions,
    ) -> Result<String, BatchError> {
        self.translate_with_prefix(key, tokens, None, options).await
    }

    /// Like [`BatcherHandle::translate`], for a multilingual model whose output must
    /// start with the target-language token `prefix` (it is not in the result).
    pub async fn translate_with_prefix(
        &self,
        key: CacheKey,
        tokens: Vec<String>,
        prefix: Option<String>,
        options: DecodeOptions,
    ) -> Result<String, BatchError> {
        self.translate_in(Lane::Bulk, key, tokens, prefix, options)
            .await
    }

    /// Like [`BatcherHandle::translate_with_prefix`], in `lane`.
    pub async fn translate_in(
        &self,
        lane: Lane,
        key: CacheKey,
        tokens: Vec<String>,
        prefix: Option<String>,
        options: DecodeOptions,
    ) -> Result<String, BatchError> {
        self.translate_alternatives_in(lane, key, tokens, prefix, options)
            .await
            .map(|t| t.best)
    }

    /// Like [`BatcherHandle::translate_in`], with the alternatives `options` ask for
    /// (`options.alternatives` is part of the options a batch shares, so a text that
    /// asks for them never shares an engine call with one that does not).
    pub async fn translate_alternatives_in(
        &self,
        lane: Lane,
        key: CacheKey,
        tokens: Vec<String>,
        prefix: Option<String>,
        options: DecodeOptions,
    ) -> Result<Translation, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx[lane_index(lane)]
            .send(Submission {
                key,
                tokens,
                prefix,
                options,
                lane,
                waiter: Waiter {
                    reply,
                    span: tracing::Span::current(),
                },
            })
            .await
            .map_err(|_| BatchError::Closed)?;
        rx.await.unwrap_or(Err(BatchError::Closed))
    }
}

/// Fair sharing of the CPUs between the engines of several models in one worker.
///
/// Every batch takes `weight` slots (its replica's threads) before it runs and gives
/// them back when done; slots are granted strictly in the order batches asked (a
/// ticket queue), so a model with a deep backlog cannot overtake a quiet model: each
/// model's batcher holds at most one batch per replica, so a batch waits at most for
/// the batches the other models' replicas asked for before it. With one model the
/// gate has as many slots as its threads and never blocks.
pub struct CpuGate {
    state: std::sync::Mutex<GateState>,
    turn: std::sync::Condvar,
    slots: usize,
}

struct GateState {
    free: usize,
    /// Next ticket to hand out.
    next: u64,
    /// Ticket whose turn it is.
    serving: u64,
}

impl CpuGate {
    /// A gate with `slots` CPU slots (at least 1).
    pub fn new(slots: usize) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Self {
            state: std::sync::Mutex::new(GateState {
                free: slots,
                next: 0,
                serving: 0,
            }),
            turn: std::sync::Condvar::new(),
            slots,
        })
    }

    /// Blocks until it is this caller's turn and `weight` slots are free (a weight
    /// above the gate's size takes the whole gate). Blocking: engine threads only.
    pub fn acquire(self: &Arc<Self>, weight: usize) -> GatePass {
        let weight = weight.clamp(1, self.slots);
        // A poisoned lock only means another engine thread panicked while holding
        // it; the counters are still consistent (every update is one statement).
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next;
        st.next += 1;
        while st.serving != ticket || st.free < weight {
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.free -= weight;
        st.serving += 1;
        drop(st);
        // The next ticket may fit in what is left.
        self.turn.notify_all();
        GatePass {
            gate: self.clone(),
            weight,
        }
    }
}

/// Slots held on a [`CpuGate`]; given back on drop.
pub struct GatePass {
    gate: Arc<CpuGate>,
    weight: usize,
}

impl Drop for GatePass {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        st.free += self.weight;
        drop(st);
        self.gate.turn.notify_all();
    }
}

/// Starts the queue task and one thread per backend replica.
pub fn spawn(
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let replicas = backend.replicas().max(1);
    spawn_gated(backend, policy, metrics, CpuGate::new(replicas), 1)
}

/// Like [`spawn`], each batch first taking `weight` slots of `gate`, which the
/// batchers of a worker's other models share.
pub fn spawn_gated(
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
    gate: Arc<CpuGate>,
    weight: usize,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let replicas = backend.replicas().max(1);
    // Per lane, room for a full batch per replica on top of what the queue holds:
    // submitters wait here (back-pressure to the consumers) rather than growing memory.
    let (bulk_tx, bulk_rx) = mpsc::channel(policy.max_batch_size * replicas);
    let (interactive_tx, interactive_rx) = mpsc::channel(policy.max_batch_size * replicas);
    let task = tokio::spawn(run(
        [bulk_rx, interactive_rx],
        backend,
        policy,
        metrics,
        replicas,
        gate,
        weight,
    ));
    (
        BatcherHandle {
            tx: [bulk_tx, interactive_tx],
        },
        task,
    )
}

/// The queue and what it holds per lane.
struct Held {
    queue: VecDeque<Queued>,
    /// Everyone awaiting each queued text.
    waiters: HashMap<CacheKey, Vec<Waiter>>,
    /// Queued texts per lane ([`lane_index`]).
    per_lane: [usize; 2],
}

async fn run(
    mut rxs: [mpsc::Receiver<Submission>; 2],
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
    replicas: usize,
    gate: Arc<CpuGate>,
    weight: usize,
) {
    // Each replica sends at most one "done" per batch it holds, and holds at most one,
    // so `replicas` slots can never fill.
    let (done_tx, mut done_rx) = mpsc::channel::<usize>(replicas);
    let mut senders: Vec<SyncSender<Batch>> = Vec::with_capacity(replicas);
    let mut threads = Vec::with_capacity(replicas);
    for i in 0..replicas {
        // Capacity 1: a replica is only sent a batch when it is idle.
        let (btx, brx) = sync_channel::<Batch>(1);
        let backend = backend.clone();
        let done_tx = done_tx.clone();
        let metrics = metrics.clone();
        let gate = gate.clone();
        let handle = std::thread::Builder::new()
            .name(format!("engine-{i}"))
            .spawn(move || {
                while let Ok(batch) = brx.recv() {
                    let _pass = gate.acquire(weight);
                    run_batch(backend.as_ref(), batch, &metrics, i);
                    if done_tx.blocking_send(i).is_err() {
                        break;
                    }
                }
            });
        match handle {
            Ok(h) => {
                senders.push(btx);
                threads.push(h);
            }
            Err(e) => tracing::error!(error = %e, "cannot start engine thread {i}"),
        }
    }
    drop(done_tx);
    let total = senders.len();
    let mut idle: Vec<usize> = (0..total).rev().collect();
    // The queue holds distinct texts; `waiters` maps each to everyone awaiting it. Each
    // lane's texts are bounded by `max_queue` (its receive branch pauses when it is
    // reached; a bulk text merged into an interactive one moves over, so at most
    // 2 × `max_queue` in all): the window the policy sorts, at least a full batch per
    // replica. A lane of its own, so a bulk backlog never keeps interactive texts out.
    let max_queue = window(&policy, replicas);
    let mut held = Held {
        queue: VecDeque::new(),
        waiters: HashMap::new(),
        per_lane: [0; 2],
    };
    let mut closed = [false; 2];
    // Batches in a row led by interactive texts while bulk texts waited.
    let mut streak = 0usize;
    // Texts in the batch each replica is running (the policy sizes batches by all
    // texts in flight, queued or running).
    let mut running = vec![0usize; total];
    // When each idle replica last finished a batch (`None`: not yet).
    let mut freed: Vec<Option<Instant>> = vec![None; total];
    // What the busy replicas have left (the drain split).
    let mut busy = BusyEstimate::new(total);
    loop {
        let wake_at = loop {
            let in_batches = running.iter().sum();
            // When the most recently freed idle replica became free.
            let freed_at = idle.iter().filter_map(|&r| freed[r]).max();
            let now = Instant::now();
            let busy_left = busy.left(now);
            match next_lane_batch(
                &held.queue,
                now,
                &policy,
                idle.len(),
                total,
                in_batches,
                streak,
                freed_at,
                busy_left,
            ) {
                Decision::Cut(positions) => {
                    let Some(replica) = idle.pop() else {
                        break None;
                    };
                    running[replica] = positions.len();
                    let cost = batch_cost(positions.len(), width(&held.queue, &positions));
                    busy.started(replica, now, cost);
                    let led = lead_lane(&held.queue, &policy, streak) == Some(Lane::Interactive);
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        log_cut(&held, &positions, (led, streak), replica, (cost, busy_left));
                    }
                    let batch = take_batch(&mut held, &positions, &metrics);
                    streak = next_streak(streak, led, held.per_lane[0] > 0);
                    if let Err(e) = senders[replica].try_send(batch) {
                        // The thread is gone; answer its batch rather than hang it.
                        tracing::error!(replica, "engine thread is not accepting work");
                        let batch = match e {
                            std::sync::mpsc::TrySendError::Full(b)
                            | std::sync::mpsc::TrySendError::Disconnected(b) => b,
                        };
                        fail_batch(batch, "engine thread stopped");
                    }
                }
                Decision::WaitUntil(t) => break Some(t),
                Decision::WaitForEngine | Decision::Idle => break None,
            }
        };
        if closed.iter().all(|c| *c) && held.queue.is_empty() && idle.len() == total {
            break;
        }
        if total == 0 {
            // No engine thread could start: fail everything instead of queueing forever.
            while let Some(q) = held.queue.pop_front() {
                dec(&mut held.per_lane[lane_index(q.pending.lane)]);
                for w in held.waiters.remove(&q.key).unwrap_or_default() {
                    w.send(Err(BatchError::Engine("no engine threads".into())));
                }
            }
        }
        let [bulk_rx, interactive_rx] = &mut rxs;
        let open = |lane: Lane, held: &Held, closed: &[bool; 2]| {
            !closed[lane_index(lane)] && held.per_lane[lane_index(lane)] < max_queue
        };
        tokio::select! {
            biased;
            Some(replica) = done_rx.recv() => {
                running[replica] = 0;
                let now = Instant::now();
                busy.finished(replica, now);
                freed[replica] = Some(now);
                idle.push(replica);
            }
            msg = interactive_rx.recv(), if open(Lane::Interactive, &held, &closed) => {
                receive(msg, interactive_rx, Lane::Interactive, &mut held, &mut closed, max_queue, &metrics);
            }
            msg = bulk_rx.recv(), if open(Lane::Bulk, &held, &closed) => {
                receive(msg, bulk_rx, Lane::Bulk, &mut held, &mut closed, max_queue, &metrics);
            }
            _ = sleep_until_opt(wake_at), if wake_at.is_some() => {}
        }
    }
    drop(senders);
    for t in threads {
        // Threads exit once their channel closes; joining here is instant.
        let _ = t.join();
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

/// Enqueues a received submission of `lane` and everything else already submitted in
/// that lane: a document's sentences (or a burst of jobs) arrive together, and cutting
/// at the first of them would send an idle replica a batch of one.
fn receive(
    msg: Option<Submission>,
    rx: &mut mpsc::Receiver<Submission>,
    lane: Lane,
    held: &mut Held,
    closed: &mut [bool; 2],
    max_queue: usize,
    metrics: &Metrics,
) {
    let Some(s) = msg else {
        closed[lane_index(lane)] = true;
        return;
    };
    enqueue(held, s, metrics);
    let mut received = 1;
    while held.per_lane[lane_index(lane)] < max_queue {
        match rx.try_recv() {
            Ok(s) => {
                enqueue(held, s, metrics);
                received += 1;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                closed[lane_index(lane)] = true;
                break;
            }
        }
    }
    // Trace level: the arrival timeline the burst wait (`max_settle`) reads.
    tracing::trace!(
        lane = lane.as_str(),
        received,
        queued = held.per_lane[lane_index(lane)],
        "texts received"
    );
}

fn enqueue(held: &mut Held, s: Submission, metrics: &Metrics) {
    if let Some(w) = held.waiters.get_mut(&s.key) {
        w.push(s.waiter);
        metrics.segments_deduplicated.inc();
        // Merged texts take the higher lane: someone waiting on it now is interactive.
        if s.lane > Lane::Bulk {
            if let Some(q) = held
                .queue
                .iter_mut()
                .find(|q| q.key == s.key && q.pending.lane < s.lane)
            {
                dec(&mut held.per_lane[lane_index(q.pending.lane)]);
                held.per_lane[lane_index(s.lane)] += 1;
                q.pending.lane = s.lane;
            }
        }
        return;
    }
    held.waiters.insert(s.key, vec![s.waiter]);
    held.per_lane[lane_index(s.lane)] += 1;
    held.queue.push_back(Queued {
        pending: Pending {
            tokens: s.tokens.len(),
            options: s.options,
            enqueued: Instant::now(),
            lane: s.lane,
        },
        key: s.key,
        tokens: s.tokens,
        prefix: s.prefix,
    });
}

/// One text fewer in a lane's count (never below zero: the counts only steer when
/// to receive, so a miscount must not panic).
fn dec(count: &mut usize) {
    *count = count.saturating_sub(1);
}

/// One debug event per cut: what a lane's latency is made of (which lane led, how
/// many interactive texts rode, the batch's width, what stayed queued, how long the
/// oldest interactive text had waited) and the drain's estimate, in [`batch_cost`]
/// units (`cost`: this batch's; `busy_left`: what the busy replicas had left).
fn log_cut(
    held: &Held,
    positions: &[usize],
    (led, streak): (bool, usize),
    replica: usize,
    (cost, busy_left): (u64, u64),
) {
    let now = Instant::now();
    let interactive = positions
        .iter()
        .filter_map(|&i| held.queue.get(i))
        .filter(|q| q.pending.lane == Lane::Interactive)
        .count();
    let oldest_interactive_ms = held
        .queue
        .iter()
        .find(|q| q.pending.lane == Lane::Interactive)
        .map(|q| {
            now.saturating_duration_since(q.pending.enqueued)
                .as_millis() as u64
        });
    tracing::debug!(
        replica,
        led = if led { "interactive" } else { "bulk" },
        streak,
        size = positions.len(),
        interactive,
        width = width(&held.queue, positions),
        queued_bulk = held.per_lane[lane_index(Lane::Bulk)],
        queued_interactive = held.per_lane[lane_index(Lane::Interactive)],
        oldest_interactive_ms,
        cost,
        busy_left,
        "batch cut"
    );
}

fn take_batch(held: &mut Held, positions: &[usize], metrics: &Metrics) -> Batch {
    let now = Instant::now();
    let mut taken: Vec<Queued> = Vec::with_capacity(positions.len());
    // Remove from the back so earlier positions stay valid.
    for &p in positions.iter().rev() {
        if let Some(q) = held.queue.remove(p) {
            dec(&mut held.per_lane[lane_index(q.pending.lane)]);
            taken.push(q);
        }
    }
    taken.sort_by_key(|q| q.tokens.len());
    let padded = taken.last().map_or(0, |q| q.tokens.len()) * taken.len();
    metrics.batch_size.observe(taken.len() as f64);
    metrics.batch_tokens.observe(padded as f64);
    metrics.batch_padded_tokens.add(padded as u64);
    metrics
        .batch_real_tokens
        .add(taken.iter().map(|q| q.tokens.len() as u64).sum());
    let options = taken
        .first()
        .map(|q| q.pending.options)
        .expect("the policy never cuts an empty batch");
    let mut sources = Vec::with_capacity(taken.len());
    let mut prefixes = Vec::with_capacity(taken.len());
    let mut ws = Vec::with_capacity(taken.len());
    for q in taken {
        let waited = now.duration_since(q.pending.enqueued).as_secs_f64();
        metrics.batch_wait_seconds.observe(waited);
        metrics.lane_wait_seconds[lane_index(q.pending.lane)].observe(waited);
        ws.push(held.waiters.remove(&q.key).unwrap_or_default());
        sources.push(q.tokens);
        prefixes.push(q.prefix);
    }
    if prefixes.iter().all(Option::is_none) {
        prefixes.clear();
    }
    Batch {
        options,
        sources,
        prefixes,
        waiters: ws,
    }
}

fn fail_batch(batch: Batch, message: &str) {
    for w in batch.waiters.into_iter().flatten() {
        w.send(Err(BatchError::Engine(message.to_string())));
    }
}

/// Calls the backend, catching panics so one bad input cannot kill a replica thread.
fn call(
    backend: &dyn Backend,
    sources: &[Vec<String>],
    prefixes: &[Option<String>],
    options: &DecodeOptions,
) -> Result<Vec<Translation>, EngineError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        backend.translate_alternatives(sources, prefixes, options)
    }))
    .unwrap_or_else(|_| Err(EngineError::Translate("engine panicked".into())))
}

/// Runs one batch on the calling (replica) thread and answers every waiter. When the
/// batch fails as a whole, each text is retried alone so one bad input fails only
/// its own job.
fn run_batch(backend: &dyn Backend, batch: Batch, metrics: &Metrics, replica: usize) {
    static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let start = Instant::now();
    let Batch {
        options,
        sources,
        prefixes,
        waiters,
    } = batch;
    let batch_id = NEXT_BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Debug level: one span per batch is cheap, one event per job only when asked for.
    let span = tracing::debug_span!("batch", batch_id, size = sources.len());
    for w in waiters.iter().flatten() {
        span.follows_from(&w.span);
        w.span
            .in_scope(|| tracing::debug!(batch_id, "text batched"));
    }
    let _entered = span.enter();
    let results: Vec<Result<Translation, BatchError>> = match call(
        backend, &sources, &prefixes, &options,
    ) {
        Ok(outs) => outs.into_iter().map(Ok).collect(),
        Err(e) => {
            metrics.engine_errors.inc();
            if sources.len() == 1 {
                tracing::warn!(error = %e, "engine failed on a text");
                vec![Err(BatchError::Engine(e.to_string()))]
            } else {
                tracing::warn!(error = %e, size = sources.len(), "engine failed on a batch; retrying its texts one by one");
                sources
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let prefix = prefixes.get(i).map(std::slice::from_ref).unwrap_or(&[]);
                        call(backend, std::slice::from_ref(s), prefix, &options)
                            .and_then(|mut v| {
                                v.pop()
                                    .ok_or_else(|| EngineError::Translate("no result".into()))
                            })
                            .map_err(|e| {
                                metrics.engine_errors.inc();
                                BatchError::Engine(e.to_string())
                            })
                    })
                    .collect()
            }
        }
    };
    let elapsed = start.elapsed();
    metrics.inference_seconds.observe(elapsed.as_secs_f64());
    tracing::debug!(
        replica,
        size = sources.len(),
        longest = sources.iter().map(Vec::len).max().unwrap_or(0),
        elapsed_ms = elapsed.as_millis() as u64,
        "batch done"
    );
    for (ws, result) in waiters.into_iter().zip(results) {
        for w in ws {
            w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn opts(beam: u32) -> DecodeOptions {
        DecodeOptions {
            beam_size: beam,
            ..DecodeOptions::default()
        }
    }

    fn policy() -> Policy {
        Policy {
            max_batch_size: 3,
            min_batch_size: 3,
            max_batch_tokens: 100,
            max_wait: Duration::from_millis(10),
            max_delay: Duration::from_secs(3600),
            max_queued: 1024,
            max_settle: Duration::ZERO,
            settle_gap: Duration::ZERO,
            interactive_burst: 2,
            interactive_max_batch_tokens: usize::MAX,
        }
    }

    fn q(items: &[(usize, u32, u64)], t0: Instant) -> VecDeque<Pending> {
        items
            .iter()
            .map(|&(tokens, beam, at_ms)| Pending {
                tokens,
                options: opts(beam),
                enqueued: t0 + Duration::from_millis(at_ms),
                lane: Lane::Bulk,
            })
            .collect()
    }

    /// Like [`q`], each text with its lane.
    fn ql(items: &[(usize, Lane, u64)], t0: Instant) -> VecDeque<Pending> {
        items
            .iter()
            .map(|&(tokens, lane, at_ms)| Pending {
                tokens,
                options: opts(1),
                enqueued: t0 + Duration::from_millis(at_ms),
                lane,
            })
            .collect()
    }

    const B: Lane = Lane::Bulk;
    const I: Lane = Lane::Interactive;

    #[test]
    fn batch_size_keeps_sorting_room_in_a_loop_and_full_batches_in_a_held_backlog() {
        let p = Policy {
            max_batch_size: 64,
            min_batch_size: 32,
            ..policy()
        };
        // Closed loop, 64 in flight on 2 replicas: one batch runs, 32 are queued.
        assert_eq!(batch_size(&p, 32, 32, 2), 32);
        // 8 documents of 20 sentences: half a share of 160, 60 queued per replica.
        assert_eq!(batch_size(&p, 120, 40, 2), 60);
        // A draining backlog: 64 running, 136 held. The half-share alone gave 50.
        assert_eq!(batch_size(&p, 136, 64, 2), 64);
        // Its last texts are shared between the replicas, down to the minimum.
        assert_eq!(batch_size(&p, 72, 64, 2), 36);
        assert_eq!(batch_size(&p, 10, 64, 2), 32);
        // A fixed size stays fixed; zero replicas counts as one.
        let fixed = Policy {
            min_batch_size: 64,
            ..p
        };
        assert_eq!(batch_size(&fixed, 1, 0, 2), 64);
        assert_eq!(batch_size(&p, 600, 0, 0), 64);
    }

    #[test]
    fn interactive_texts_lead_and_are_topped_up_with_shorter_bulk_texts() {
        let t0 = Instant::now();
        let roomy = Policy {
            max_batch_tokens: 1000,
            ..policy()
        };
        // Bulk 40, 40, 40 form a full run (the single-lane policy would cut it); the
        // interactive 12 leads instead, topped up with the longest bulk texts no
        // longer than 12 (10, then 9; 30 and 40 would widen the batch).
        let queue = ql(
            &[
                (40, B, 0),
                (40, B, 0),
                (40, B, 0),
                (9, B, 1),
                (30, B, 1),
                (10, B, 2),
                (12, I, 3),
            ],
            t0,
        );
        // Topped up to full, it is cut at once, although a replica is busy and the
        // interactive text alone would wait up to max_wait for company.
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + Duration::from_millis(4),
                &roomy,
                1,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![3, 5, 6])
        );
        // Not full and nothing to top up with: it waits (max_wait), as a lone text does.
        let lone = ql(&[(40, B, 0), (12, I, 3)], t0);
        assert_eq!(
            next_lane_batch(
                &lone,
                t0 + Duration::from_millis(4),
                &roomy,
                1,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::WaitUntil(t0 + Duration::from_millis(13))
        );
        // ... and goes at once on an idle engine.
        assert_eq!(
            next_lane_batch(
                &lone,
                t0 + Duration::from_millis(4),
                &roomy,
                2,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![1])
        );
    }

    #[test]
    fn bulk_leads_once_the_interactive_burst_is_spent() {
        let t0 = Instant::now();
        let roomy = Policy {
            max_batch_tokens: 1000,
            ..policy()
        };
        let queue = ql(
            &[(40, B, 0), (40, B, 0), (40, B, 0), (12, I, 3), (12, I, 3)],
            t0,
        );
        let now = t0 + Duration::from_millis(4);
        // Streak below the burst (2): interactive leads.
        assert_eq!(
            next_lane_batch(&queue, now, &roomy, 2, 2, 0, 1, None, 0),
            Decision::Cut(vec![3, 4])
        );
        // Spent: the bulk run goes, with no interactive text in it.
        assert_eq!(
            next_lane_batch(&queue, now, &roomy, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2])
        );
        // Bulk's turn with room to spare: the interactive texts (no wider) ride along
        // in the free room, within the token budget.
        let wide = Policy {
            max_batch_size: 8,
            min_batch_size: 8,
            ..roomy
        };
        assert_eq!(
            next_lane_batch(&queue, now, &wide, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2, 3, 4])
        );
        let tight = Policy {
            max_batch_tokens: 160,
            ..wide
        };
        assert_eq!(
            next_lane_batch(&queue, now, &tight, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2, 3])
        );
        // A full bulk batch: riders take the places of its shortest bulk texts (the
        // newest among equals), at most a quarter of it, never its oldest.
        let full = ql(
            &[
                (40, B, 0),
                (40, B, 0),
                (40, B, 0),
                (40, B, 0),
                (40, B, 0),
                (40, B, 0),
                (35, B, 0),
                (35, B, 0),
                (12, I, 3),
                (12, I, 3),
                (12, I, 3),
                (50, I, 3),
            ],
            t0,
        );
        assert_eq!(
            next_lane_batch(&full, now, &wide, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2, 3, 4, 5, 8, 9])
        );
        // A bulk batch larger than the interactive budget takes no riders: they lead
        // the next batch instead of running through a long one.
        let budget = Policy {
            interactive_max_batch_tokens: 200,
            ..wide
        };
        assert_eq!(
            next_lane_batch(&full, now, &budget, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2, 3, 4, 5, 6, 7])
        );
        // Within it (3 × 40 + riders ≤ 200), they ride.
        assert_eq!(
            next_lane_batch(&queue, now, &budget, 2, 2, 0, 2, None, 0),
            Decision::Cut(vec![0, 1, 2, 3, 4])
        );
        // No bulk text waiting: the streak does not matter.
        let only = ql(&[(12, I, 0), (12, I, 0), (12, I, 0)], t0);
        assert_eq!(
            next_lane_batch(&only, now, &roomy, 1, 2, 0, 9, None, 0),
            Decision::Cut(vec![0, 1, 2])
        );
        // The streak counts batches led by interactive texts that left bulk waiting.
        assert_eq!(next_streak(0, true, true), 1);
        assert_eq!(next_streak(1, true, true), 2);
        assert_eq!(next_streak(2, false, true), 0);
        assert_eq!(next_streak(2, true, false), 0);
    }

    #[test]
    fn interactive_led_batches_keep_to_their_own_token_budget() {
        let t0 = Instant::now();
        let p = Policy {
            max_batch_tokens: 1000,
            interactive_max_batch_tokens: 30,
            ..policy()
        };
        // Three interactive 12s would fit the bulk budget; the interactive one (30)
        // takes two, and tops them up with nothing (a third 10 would make 36).
        let queue = ql(&[(10, B, 0), (12, I, 1), (12, I, 1), (12, I, 1)], t0);
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + Duration::from_millis(2),
                &p,
                2,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![1, 2])
        );
        // A single longer text still goes alone.
        let long = ql(&[(10, B, 0), (40, I, 1)], t0);
        assert_eq!(
            next_lane_batch(
                &long,
                t0 + Duration::from_millis(2),
                &p,
                2,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![1])
        );
        // Bulk-led batches keep the bulk budget.
        let bulk = ql(&[(12, B, 0), (12, B, 0), (12, B, 0)], t0);
        assert_eq!(
            next_lane_batch(
                &bulk,
                t0 + Duration::from_millis(2),
                &p,
                2,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![0, 1, 2])
        );
    }

    #[test]
    fn interactive_runs_are_sorted_by_length_among_themselves() {
        let t0 = Instant::now();
        let roomy = Policy {
            max_batch_tokens: 1000,
            ..policy()
        };
        // Interactive 50, 49, 48 is a full run that pads least; the oldest interactive
        // text (5) and the bulk text are passed over while young.
        let queue = ql(
            &[(30, B, 0), (5, I, 1), (50, I, 2), (49, I, 3), (48, I, 4)],
            t0,
        );
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + Duration::from_millis(5),
                &roomy,
                1,
                2,
                0,
                0,
                None,
                0
            ),
            Decision::Cut(vec![2, 3, 4])
        );
    }

    #[test]
    fn empty_queue_is_idle() {
        let t0 = Instant::now();
        assert_eq!(
            next_batch(&q(&[], t0), t0, &policy(), 1, 1, 0),
            Decision::Idle
        );
    }

    #[test]
    fn idle_engine_cuts_at_once() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 2, 2, 0),
            Decision::Cut(vec![0])
        );
    }

    #[test]
    fn busy_engine_waits_for_a_replica() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_secs(1), &policy(), 0, 2, 0),
            Decision::WaitForEngine
        );
    }

    #[test]
    fn partly_busy_engine_waits_up_to_max_wait() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 1, 2)], t0);
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(3), &policy(), 1, 2, 0),
            Decision::WaitUntil(t0 + Duration::from_millis(10))
        );
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(10), &policy(), 1, 2, 0),
            Decision::Cut(vec![0, 1])
        );
    }

    #[test]
    fn full_batch_is_cut_without_waiting() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 1, 0), (5, 1, 0), (5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2, 0),
            Decision::Cut(vec![0, 1, 2])
        );
    }

    #[test]
    fn a_burst_is_waited_out_before_a_bulk_batch_is_cut() {
        let t0 = Instant::now();
        let p = Policy {
            max_settle: Duration::from_millis(50),
            settle_gap: Duration::from_millis(20),
            ..policy()
        };
        // Four texts arrived by 2 ms, so a full run (3) is held; one replica is busy.
        let queue = q(&[(9, 1, 0), (5, 1, 1), (6, 1, 1), (7, 1, 2)], t0);
        assert_eq!(
            next_batch(&queue, t0 + ms(3), &p, 1, 2, 1),
            Decision::WaitUntil(t0 + ms(22)),
            "texts still arriving: wait for settle_gap after the newest"
        );
        assert_eq!(
            next_batch(&queue, t0 + ms(15), &p, 1, 2, 1),
            Decision::WaitUntil(t0 + ms(22)),
            "a pause longer than max_wait (10 ms) but shorter than settle_gap: still a burst"
        );
        // Arrivals paused for settle_gap: the best full run is cut.
        assert_eq!(
            next_batch(&queue, t0 + ms(22), &p, 1, 2, 1),
            Decision::Cut(vec![0, 2, 3])
        );
        assert_eq!(
            next_batch(&queue, t0 + ms(3), &policy(), 1, 2, 1),
            Decision::Cut(vec![0, 2, 3]),
            "max_settle 0: cut at once, as before"
        );
        // A steady stream is waited out for max_settle after the oldest text at most.
        let stream = q(&[(9, 1, 0), (5, 1, 20), (6, 1, 40), (7, 1, 45)], t0);
        assert_eq!(
            next_batch(&stream, t0 + ms(46), &p, 1, 2, 1),
            Decision::WaitUntil(t0 + ms(50))
        );
        assert_eq!(
            next_batch(&stream, t0 + ms(50), &p, 1, 2, 1),
            Decision::Cut(vec![0, 2, 3])
        );
        // Every replica idle: a lone job never waits.
        let lone = q(&[(9, 1, 0)], t0);
        assert_eq!(next_batch(&lone, t0, &p, 2, 2, 0), Decision::Cut(vec![0]));
        // The window is full (max_queued 4, at least a batch per replica: 6): no more
        // texts can arrive, so nothing is waited for.
        let full = q(
            &[
                (9, 1, 0),
                (5, 1, 1),
                (6, 1, 1),
                (7, 1, 2),
                (3, 1, 2),
                (4, 1, 2),
            ],
            t0,
        );
        let small = Policy { max_queued: 4, ..p };
        assert_eq!(
            next_batch(&full, t0 + ms(3), &small, 1, 2, 1),
            Decision::Cut(vec![0, 2, 3])
        );
        // Interactive texts never wait for a burst.
        let mixed = ql(&[(9, I, 0), (5, I, 1), (6, I, 1), (7, B, 2)], t0);
        assert_eq!(
            next_lane_batch(&mixed, t0 + ms(3), &p, 1, 2, 1, 0, None, 0),
            Decision::Cut(vec![0, 1, 2])
        );
        // Overdue (max_delay passed): no waiting either.
        let overdue = Policy {
            max_delay: ms(2),
            ..p
        };
        assert!(matches!(
            next_batch(&queue, t0 + ms(3), &overdue, 1, 2, 1),
            Decision::Cut(_)
        ));
    }

    #[test]
    fn a_freed_replica_waits_for_the_texts_its_answers_bring() {
        let t0 = Instant::now();
        let p = Policy {
            max_settle: ms(100),
            settle_gap: ms(20),
            ..policy()
        };
        // One text left over from long ago, one replica busy, the other freed at
        // 1,000 ms: it waits settle_gap for the replacements of the jobs it answered
        // instead of running the one text alone.
        let queue = q(&[(9, 1, 0)], t0);
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + ms(1000),
                &p,
                1,
                2,
                32,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::WaitUntil(t0 + ms(1020))
        );
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + ms(1020),
                &p,
                1,
                2,
                32,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::Cut(vec![0])
        );
        // Never past the oldest text's max_delay (here 3,600 s: the wait stands; with
        // 1,010 ms it ends there).
        let short = Policy {
            max_delay: ms(1010),
            ..p
        };
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + ms(1000),
                &short,
                1,
                2,
                32,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::WaitUntil(t0 + ms(1010))
        );
        // The burst wait off (max_settle 0), every replica idle, or an interactive
        // text: cut at once, as before.
        let off = Policy {
            max_settle: Duration::ZERO,
            ..p
        };
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + ms(1000),
                &off,
                1,
                2,
                32,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::Cut(vec![0])
        );
        assert_eq!(
            next_lane_batch(
                &queue,
                t0 + ms(1000),
                &p,
                2,
                2,
                0,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::Cut(vec![0])
        );
        let mut person = q(&[(9, 1, 0)], t0);
        person[0].lane = Lane::Interactive;
        assert_eq!(
            next_lane_batch(
                &person,
                t0 + ms(1000),
                &p,
                1,
                2,
                32,
                0,
                Some(t0 + ms(1000)),
                0
            ),
            Decision::Cut(vec![0])
        );
    }

    #[test]
    fn token_budget_counts_padding() {
        let t0 = Instant::now();
        // 40 + 40 = 2 × 40 = 80 fits; a third at 40 would be 120 > 100.
        let queue = q(&[(40, 1, 0), (40, 1, 0), (40, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2, 0),
            Decision::Cut(vec![0, 1])
        );
        // A short text and a long one: padding to 60 × 2 = 120 > 100, so the long
        // one's run is full on its own and goes alone.
        let queue = q(&[(5, 1, 0), (60, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2, 0),
            Decision::Cut(vec![1])
        );
        // A single text over the budget still goes, alone, once it is the batch's
        // turn (here: the oldest, overdue).
        let queue = q(&[(500, 1, 0), (1, 1, 0)], t0);
        let overdue = Policy {
            max_delay: Duration::ZERO,
            ..policy()
        };
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(10), &overdue, 1, 2, 0),
            Decision::Cut(vec![0])
        );
    }

    #[test]
    fn crowded_queue_cuts_the_run_that_pads_least_wherever_it_stands() {
        let t0 = Instant::now();
        // max_batch_size 3; in length order 2, 9, 10, 11, 40, 41, 42: the run
        // 40, 41, 42 pads least relative to its tokens (3 of 123), though the oldest
        // text (10) is not in it.
        let queue = q(
            &[
                (10, 1, 0),
                (40, 1, 1),
                (11, 1, 2),
                (2, 1, 3),
                (9, 1, 4),
                (42, 1, 5),
                (41, 1, 6),
            ],
            t0,
        );
        let roomy = Policy {
            max_batch_tokens: 1000,
            ..policy()
        };
        assert_eq!(
            next_batch(&queue, t0, &roomy, 1, 2, 0),
            Decision::Cut(vec![1, 5, 6])
        );
        // Equal padding: the run holding the oldest text wins.
        let queue = q(
            &[
                (7, 1, 0),
                (3, 1, 1),
                (3, 1, 2),
                (3, 1, 3),
                (7, 1, 4),
                (7, 1, 5),
            ],
            t0,
        );
        assert_eq!(
            next_batch(&queue, t0, &roomy, 1, 2, 0),
            Decision::Cut(vec![0, 4, 5])
        );
        // Not crowded: one run, cut at once on an idle engine.
        let queue = q(&[(10, 1, 0), (50, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &roomy, 2, 2, 0),
            Decision::Cut(vec![0, 1])
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The drain's policy: 20 long texts and 60 short ones, all held, a replica
    /// freeing. Equal counts (40 and 40) would pad 20 short texts to 100 tokens.
    fn drain_queue(t0: Instant) -> (VecDeque<Pending>, Policy) {
        let p = Policy {
            max_batch_size: 64,
            min_batch_size: 32,
            max_batch_tokens: 8192,
            max_delay: Duration::from_secs(2),
            ..policy()
        };
        // Long and short interleaved, as a backlog arrives.
        let items: Vec<(usize, u32, u64)> = (0..80)
            .map(|i| (if i % 4 == 0 { 100 } else { 20 }, 1, i as u64))
            .collect();
        (q(&items, t0), p)
    }

    #[test]
    fn a_drain_gives_the_freed_replica_the_longest_texts_sized_to_finish_with_the_rest() {
        let t0 = Instant::now();
        let (queue, p) = drain_queue(t0);
        let long: Vec<usize> = (0..80).filter(|i| i % 4 == 0).collect();
        // Both replicas free, nothing running: the 20 long texts (cost 20 × 100 × 300 =
        // 600,000) against the 60 short (60 × 20 × 220 = 264,000): fewer long ones
        // leave a long text in the rest, more widen nothing but add work.
        assert_eq!(
            next_lane_batch(&queue, t0 + ms(100), &p, 2, 2, 0, 0, None, 0),
            Decision::Cut(long.clone())
        );
        // The other replica has far more left than all of this: the freed one takes
        // a full batch (64 texts, within the budget of 8192), leaving the rest small.
        match next_lane_batch(&queue, t0 + ms(100), &p, 1, 2, 40, 0, None, 10_000_000) {
            Decision::Cut(cut) => {
                assert_eq!(cut.len(), 64);
                assert!(long.iter().all(|i| cut.contains(i)), "the long texts first");
            }
            other => panic!("expected a cut, got {other:?}"),
        }
        // Outside a drain (a backlog of 3 batches per replica), the count rule's runs.
        let items: Vec<(usize, u32, u64)> = (0..400)
            .map(|i| (if i % 4 == 0 { 100 } else { 20 }, 1, i as u64))
            .collect();
        match next_lane_batch(&q(&items, t0), t0 + ms(500), &p, 1, 2, 64, 0, None, 0) {
            Decision::Cut(cut) => assert_eq!(cut.len(), 64),
            other => panic!("expected a cut, got {other:?}"),
        }
    }

    #[test]
    fn an_overdue_text_is_batched_before_any_drain_split() {
        let t0 = Instant::now();
        let (mut queue, p) = drain_queue(t0);
        // The oldest text is short; at 2 s it is due, and goes in the next batch.
        queue[0].tokens = 20;
        match next_lane_batch(&queue, t0 + ms(2500), &p, 2, 2, 0, 0, None, 0) {
            Decision::Cut(cut) => assert!(cut.contains(&0), "the overdue text waits: {cut:?}"),
            other => panic!("expected a cut, got {other:?}"),
        }
    }

    #[test]
    fn busy_estimate_learns_the_engine_speed_from_finished_batches() {
        let t0 = Instant::now();
        let mut busy = BusyEstimate::new(2);
        assert_eq!(busy.left(t0), 0);
        // Before any batch finished, a running batch has its whole cost left.
        busy.started(0, t0, 1000);
        assert_eq!(busy.left(t0 + ms(500)), 1000);
        // 1000 units in 1 s.
        busy.finished(0, t0 + ms(1000));
        busy.started(1, t0 + ms(1000), 3000);
        assert_eq!(busy.left(t0 + ms(2000)), 2000);
        busy.started(0, t0 + ms(2000), 500);
        assert_eq!(busy.left(t0 + ms(2000)), 2500);
        assert_eq!(busy.left(t0 + ms(9000)), 0);
        // Finishing a replica that runs nothing changes nothing.
        busy.finished(1, t0 + ms(4000));
        busy.finished(1, t0 + ms(4000));
        busy.finished(7, t0 + ms(4000));
        assert_eq!(busy.left(t0 + ms(4000)), 0);
    }

    #[test]
    fn batch_cost_grows_faster_than_padded_tokens() {
        assert_eq!(batch_cost(0, 100), 0);
        assert_eq!(batch_cost(2, 10), 2 * 10 * (10 + STEP_TOKENS));
        // Twice as wide costs more than twice as much; twice as many, twice.
        assert!(batch_cost(8, 100) > 2 * batch_cost(8, 50));
        assert_eq!(batch_cost(16, 50), 2 * batch_cost(8, 50));
        assert_eq!(batch_cost(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn overdue_oldest_text_is_in_the_next_batch() {
        let t0 = Instant::now();
        let p = Policy {
            max_batch_tokens: 1000,
            max_delay: Duration::from_millis(100),
            ..policy()
        };
        // Longest first: runs 50, 49, 48 (full) and 20, 5 (the rest). The oldest
        // (20) is passed over while young. One of three replicas free: not a drain
        // (that needs the queue to fit one batch per replica; below).
        let queue = q(
            &[(20, 1, 0), (50, 1, 1), (49, 1, 2), (48, 1, 3), (5, 1, 4)],
            t0,
        );
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(50), &p, 1, 3, 0),
            Decision::Cut(vec![1, 2, 3])
        );
        // Overdue: its run goes next, though not full.
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(100), &p, 1, 3, 0),
            Decision::Cut(vec![0, 4])
        );
        // With max_delay 0 every batch holds the oldest text; a run that is not full
        // still waits up to max_wait for more.
        let fifo = Policy {
            max_delay: Duration::ZERO,
            ..p
        };
        assert_eq!(
            next_batch(&queue, t0, &fifo, 1, 3, 0),
            Decision::WaitUntil(t0 + Duration::from_millis(10))
        );
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(10), &fifo, 1, 3, 0),
            Decision::Cut(vec![0, 4])
        );
        // On two replicas the queue is a drain, split to finish together: while the
        // oldest is young, 50 and 49 now (cost 25,000) and 48, 20 and 5 next (35,712;
        // the count rule's 50, 49, 48 then 20, 5: 37,500 and 8,800). Overdue, the
        // batch cut now is the one of that split holding it.
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(50), &p, 1, 2, 0),
            Decision::Cut(vec![1, 2])
        );
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(100), &p, 1, 2, 0),
            Decision::Cut(vec![0, 3, 4])
        );
    }

    #[test]
    fn partition_cuts_longest_first_on_count_and_budget() {
        let p = Policy {
            max_batch_size: 3,
            min_batch_size: 3,
            max_batch_tokens: 30,
            ..policy()
        };
        let runs = partition(&[40, 10, 9, 5, 2], p.max_batch_size, p.max_batch_tokens);
        let spans: Vec<(usize, usize, bool, usize, usize)> = runs
            .iter()
            .map(|r| (r.start, r.end, r.full, r.padded, r.real))
            .collect();
        // 40 alone (with 10 it would pad 80 > 30); 10, 9, 5 (30, three texts);
        // 2, last and short of three: not full.
        assert_eq!(
            spans,
            vec![
                (0, 1, true, 40, 40),
                (1, 4, true, 30, 24),
                (4, 5, false, 2, 2)
            ]
        );
    }

    #[test]
    fn batch_shares_the_oldest_texts_options() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 4, 0), (5, 1, 1), (5, 4, 1)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 2, 2, 0),
            Decision::Cut(vec![0, 2])
        );
    }

    /// Echoes its input's token count; records every batch's size.
    struct Fake {
        batches: Mutex<Vec<usize>>,
        replicas: usize,
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Backend for Fake {
        fn translate(
            &self,
            sources: &[Vec<String>],
            _: &[Option<String>],
            _: &DecodeOptions,
        ) -> Result<Vec<String>, EngineError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(sources.len());
            std::thread::sleep(self.delay);
            if sources.len() > 1 && sources.iter().any(|s| s[0] == "boom") {
                return Err(EngineError::Translate("boom in batch".into()));
            }
            if sources.len() == 1 && sources[0][0] == "boom" {
                return Err(EngineError::Translate("boom".into()));
            }
            Ok(sources.iter().map(|s| s.join(" ")).collect())
        }

        fn replicas(&self) -> usize {
            self.replicas
        }
    }

    #[test]
    fn cpu_gate_serves_in_arrival_order() {
        let gate = CpuGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.acquire(1);
        let mut threads = Vec::new();
        for i in 0..4 {
            let (gate, order) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _p = gate.acquire(1);
                order.lock().unwrap().push(i);
            }));
            // Each thread takes its ticket before the next one starts.
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(order.lock().unwrap().is_empty(), "the slot is held");
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn cpu_gate_counts_weights() {
        let gate = CpuGate::new(2);
        let a = gate.acquire(1);
        let b = gate.acquire(1);
        let taken = Arc::new(AtomicUsize::new(0));
        let t = {
            let (gate, taken) = (gate.clone(), taken.clone());
            std::thread::spawn(move || {
                let _p = gate.acquire(5); // clamped to the whole gate
                taken.store(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(taken.load(Ordering::SeqCst), 0, "needs both slots");
        drop(b);
        t.join().unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 1);
    }

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    fn fake(replicas: usize, delay_ms: u64) -> Arc<Fake> {
        Arc::new(Fake {
            batches: Mutex::new(Vec::new()),
            replicas,
            delay: Duration::from_millis(delay_ms),
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn concurrent_texts_are_batched_and_answered_in_order() {
        let backend = fake(1, 30);
        let metrics = Arc::new(Metrics::default());
        let (h, task) = spawn(
            backend.clone(),
            Policy {
                max_batch_size: 8,
                min_batch_size: 8,
                max_batch_tokens: 1000,
                max_wait: Duration::from_millis(5),
                max_delay: Duration::from_secs(3600),
                max_queued: 1024,
                max_settle: Duration::ZERO,
                settle_gap: Duration::ZERO,
                interactive_burst: 2,
                interactive_max_batch_tokens: usize::MAX,
            },
            metrics.clone(),
        );
        let mut futs = Vec::new();
        for i in 0..20u8 {
            let h = h.clone();
            futs.push(tokio::spawn(async move {
                h.translate(key(i), vec![format!("t{i}")], opts(1)).await
            }));
        }
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().unwrap(), format!("t{i}"));
        }
        let batches = backend.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.iter().any(|&b| b > 1), "no batching: {batches:?}");
        assert!(batches.iter().all(|&b| b <= 8));
        drop(h);
        task.await.unwrap();
        assert_eq!(metrics.batch_size.count() as usize, batches.len());
    }

    #[tokio::test]
    async fn identical_texts_are_translated_once() {
        let backend = fake(1, 20);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(backend.clone(), policy(), metrics.clone());
        // Occupy the engine so the duplicates meet in the queue.
        let first = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(1), vec!["a".into()], opts(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let dups: Vec<_> = (0..5)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.translate(key(2), vec!["b".into()], opts(1)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), "a");
        for d in dups {
            assert_eq!(d.await.unwrap().unwrap(), "b");
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.segments_deduplicated.get(), 4);
    }

    #[tokio::test]
    async fn a_failing_text_fails_alone() {
        let backend = fake(1, 20);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(backend.clone(), policy(), metrics.clone());
        let block = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(9), vec!["x".into()], opts(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let good = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(1), vec!["ok".into()], opts(1)).await })
        };
        let bad = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(2), vec!["boom".into()], opts(1)).await })
        };
        block.await.unwrap().unwrap();
        assert_eq!(good.await.unwrap().unwrap(), "ok");
        assert!(matches!(bad.await.unwrap(), Err(BatchError::Engine(_))));
        assert!(metrics.engine_errors.get() >= 1);
    }

    #[tokio::test]
    async fn lone_text_on_idle_engine_does_not_wait() {
        let backend = fake(2, 0);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(
            backend,
            Policy {
                max_batch_size: 32,
                min_batch_size: 32,
                max_batch_tokens: 1000,
                max_wait: Duration::from_secs(5),
                max_delay: Duration::from_secs(3600),
                max_queued: 1024,
                max_settle: Duration::ZERO,
                settle_gap: Duration::ZERO,
                interactive_burst: 2,
                interactive_max_batch_tokens: usize::MAX,
            },
            metrics,
        );
        let t = Instant::now();
        h.translate(key(1), vec!["x".into()], opts(1))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    /// Records the texts of every batch.
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        delay: Duration,
    }

    impl Backend for Recorder {
        fn translate(
            &self,
            sources: &[Vec<String>],
            _: &[Option<String>],
            _: &DecodeOptions,
        ) -> Result<Vec<String>, EngineError> {
            self.batches
                .lock()
                .unwrap()
                .push(sources.iter().map(|s| s.join(" ")).collect());
            std::thread::sleep(self.delay);
            Ok(sources.iter().map(|s| s.join(" ")).collect())
        }

        fn replicas(&self) -> usize {
            1
        }
    }

    fn submit(
        h: &BatcherHandle,
        lane: Lane,
        k: u8,
        text: &str,
    ) -> tokio::task::JoinHandle<Result<String, BatchError>> {
        let h = h.clone();
        let text = text.to_owned();
        tokio::spawn(async move {
            h.translate_in(lane, key(k), vec![text], None, opts(1))
                .await
        })
    }

    #[tokio::test]
    async fn an_interactive_text_overtakes_a_bulk_backlog_larger_than_the_window() {
        let backend = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            delay: Duration::from_millis(20),
        });
        let metrics = Arc::new(Metrics::default());
        // A window of 4 texts per lane and batches of 2: 60 bulk texts wait mostly in
        // the submission channel and outside it, where an interactive text would queue
        // behind them without a lane of its own.
        let (h, task) = spawn(
            backend.clone(),
            Policy {
                max_batch_size: 2,
                min_batch_size: 2,
                max_batch_tokens: 1000,
                max_wait: Duration::from_millis(5),
                max_delay: Duration::from_secs(3600),
                max_queued: 4,
                max_settle: Duration::ZERO,
                settle_gap: Duration::ZERO,
                interactive_burst: 2,
                interactive_max_batch_tokens: usize::MAX,
            },
            metrics.clone(),
        );
        let bulk: Vec<_> = (0..60u8)
            .map(|i| submit(&h, Lane::Bulk, i, &format!("b{i}")))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let urgent = submit(&h, Lane::Interactive, 200, "urgent");
        assert_eq!(urgent.await.unwrap().unwrap(), "urgent");
        let pos = backend
            .batches
            .lock()
            .unwrap()
            .iter()
            .position(|b| b.iter().any(|t| t == "urgent"))
            .expect("the interactive text was batched");
        for (i, b) in bulk.into_iter().enumerate() {
            assert_eq!(b.await.unwrap().unwrap(), format!("b{i}"), "bulk text {i}");
        }
        let batches = backend.batches.lock().unwrap().clone();
        // About 3 batches ran in the 50 ms before it came: it went in one of the next
        // two (one running, one cut when the replica freed), long before the 30 bulk
        // batches drained.
        assert!(
            pos <= 6,
            "interactive text in batch {pos} of {}: {batches:?}",
            batches.len()
        );
        assert!(batches.len() >= 30, "{batches:?}");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 61);
        assert_eq!(metrics.lane_wait_seconds[1].count(), 1);
        assert_eq!(metrics.lane_wait_seconds[0].count(), 60);
        drop(h);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_text_merged_from_both_lanes_takes_the_interactive_lane() {
        let backend = Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            delay: Duration::from_millis(30),
        });
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(
            backend.clone(),
            Policy {
                max_batch_size: 1,
                min_batch_size: 1,
                max_batch_tokens: 1000,
                max_wait: Duration::from_millis(5),
                max_delay: Duration::from_secs(3600),
                max_queued: 64,
                max_settle: Duration::ZERO,
                settle_gap: Duration::ZERO,
                interactive_burst: 4,
                interactive_max_batch_tokens: usize::MAX,
            },
            metrics.clone(),
        );
        // Occupy the replica, then queue bulk texts; "shared" is the last of them.
        let first = submit(&h, Lane::Bulk, 0, "first");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut bulk: Vec<_> = (1..6u8)
            .map(|i| submit(&h, Lane::Bulk, i, &format!("b{i}")))
            .collect();
        bulk.push(submit(&h, Lane::Bulk, 9, "shared"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = submit(&h, Lane::Interactive, 9, "shared");
        assert_eq!(again.await.unwrap().unwrap(), "shared");
        first.await.unwrap().unwrap();
        for b in bulk {
            b.await.unwrap().unwrap();
        }
        let batches = backend.batches.lock().unwrap().clone();
        // Translated once, right after the batch that was running.
        assert_eq!(
            batches.iter().filter(|b| b[0] == "shared").count(),
            1,
            "{batches:?}"
        );
        assert_eq!(batches[1], ["shared"], "{batches:?}");
        assert_eq!(metrics.segments_deduplicated.get(), 1);
    }

    /// Simulations of the policy over a clock and replicas of its own, for the
    /// property tests: the queue task's loop without threads or time.
    mod simulate {
        use super::*;
        use proptest::prelude::*;

        /// One text of a run: length, options (beam 1 or 4), arrival (ms).
        type Arrival = (usize, u32, u64);

        /// Every cut: when (ms), and which texts (arrival indices).
        struct Trace {
            cuts: Vec<(u64, Vec<usize>)>,
        }

        /// Runs `arrivals` (sorted by time) through the policy with `replicas`
        /// replicas, each batch taking 1 ms plus 0.05 ms per padded token.
        fn run(arrivals: &[Arrival], p: &Policy, replicas: usize) -> Trace {
            let laned: Vec<LanedArrival> = arrivals
                .iter()
                .map(|&(l, b, ms)| (l, b, ms, Lane::Bulk))
                .collect();
            run_lanes(&laned, p, replicas).0
        }

        /// The cut (index into `trace.cuts`) each text was batched in.
        fn cut_of(trace: &Trace) -> HashMap<usize, usize> {
            trace
                .cuts
                .iter()
                .enumerate()
                .flat_map(|(c, (_, ids))| ids.iter().map(move |&i| (i, c)))
                .collect()
        }

        /// One text of a run with its lane.
        type LanedArrival = (usize, u32, u64, Lane);

        /// Like [`run`] over two lanes, keeping the interactive streak as the queue
        /// task does, and checking at every cut that interactive texts lead unless
        /// bulk has its turn, that an interactive-led cut keeps to its token budget
        /// and its bulk top-up is no longer than its interactive texts, that the
        /// interactive riders of a bulk-led cut widen nothing and leave bulk texts in
        /// it, and that the streak never passes the burst. Also returns,
        /// per cut, whether it was led by interactive texts.
        fn run_lanes(arrivals: &[LanedArrival], p: &Policy, replicas: usize) -> (Trace, Vec<bool>) {
            run_lanes_costed(arrivals, p, replicas, 20)
        }

        /// [`run_lanes`] with batches of 1 ms plus 1 ms per `tokens_per_ms` padded
        /// tokens (1: an engine far slower than the arrivals, so texts queue long past
        /// their due time).
        fn run_lanes_costed(
            arrivals: &[LanedArrival],
            p: &Policy,
            replicas: usize,
            tokens_per_ms: usize,
        ) -> (Trace, Vec<bool>) {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let mut queue: VecDeque<Pending> = VecDeque::new();
            let mut ids: VecDeque<usize> = VecDeque::new();
            let mut busy_until = vec![0u64; replicas];
            let mut running = vec![0usize; replicas];
            let mut next = 0usize;
            let mut now = 0u64;
            let mut cuts = Vec::new();
            let mut led = Vec::new();
            let mut streak = 0usize;
            let mut busy = BusyEstimate::new(replicas);
            let mut started = vec![false; replicas];
            loop {
                for r in 0..replicas {
                    if started[r] && busy_until[r] <= now {
                        busy.finished(r, at(busy_until[r]));
                        started[r] = false;
                    }
                }
                while next < arrivals.len() && arrivals[next].2 <= now {
                    let (tokens, beam, ms, lane) = arrivals[next];
                    queue.push_back(Pending {
                        tokens,
                        options: opts(beam),
                        enqueued: at(ms),
                        lane,
                    });
                    ids.push_back(next);
                    next += 1;
                }
                let free: Vec<usize> = (0..replicas).filter(|&r| busy_until[r] <= now).collect();
                let in_batches = (0..replicas)
                    .filter(|&r| busy_until[r] > now)
                    .map(|r| running[r])
                    .sum();
                // Replicas that never ran a batch count as freed at the start.
                let freed_at = free.iter().map(|&r| busy_until[r]).max().map(at);
                let decision = next_lane_batch(
                    &queue,
                    at(now),
                    p,
                    free.len(),
                    replicas,
                    in_batches,
                    streak,
                    freed_at,
                    busy.left(at(now)),
                );
                let mut wake = arrivals.get(next).map(|a| a.2);
                let soonest_free = busy_until.iter().copied().filter(|&b| b > now).min();
                match decision {
                    Decision::Cut(positions) => {
                        assert!(!positions.is_empty(), "empty cut");
                        assert!(positions.windows(2).all(|w| w[0] < w[1]), "not ascending");
                        let lens: Vec<usize> = positions.iter().map(|&i| queue[i].tokens).collect();
                        let longest = lens.iter().copied().max().unwrap_or(0);
                        assert!(positions.len() <= p.max_batch_size.max(1));
                        // Larger than the count rule's size only in a drain, split to
                        // finish together.
                        let size = batch_size(p, queue.len(), in_batches, replicas);
                        assert!(
                            positions.len() <= size || queue.len().div_ceil(replicas) >= size,
                            "{} texts over the size {size} outside a drain",
                            positions.len()
                        );
                        assert!(
                            positions.len() == 1 || longest * positions.len() <= p.max_batch_tokens,
                            "over the token budget: {lens:?}"
                        );
                        let options = queue[positions[0]].options;
                        assert!(positions.iter().all(|&i| queue[i].options == options));
                        let has = |lane| queue.iter().any(|q| q.lane == lane);
                        let bulk_turn = has(Lane::Bulk) && streak >= p.interactive_burst;
                        let lane_width = |lane| {
                            positions
                                .iter()
                                .filter(|&&i| queue[i].lane == lane)
                                .map(|&i| queue[i].tokens)
                                .max()
                        };
                        let riders = positions
                            .iter()
                            .filter(|&&i| queue[i].lane == Lane::Interactive)
                            .count();
                        let interactive = lead_lane(&queue, p, streak) == Some(Lane::Interactive);
                        assert!(
                            streak <= p.interactive_burst,
                            "streak {streak} past the burst"
                        );
                        if has(Lane::Interactive) && !bulk_turn {
                            assert!(interactive, "interactive texts queued, a bulk batch led");
                        }
                        if interactive {
                            assert!(riders > 0, "an interactive-led cut without one");
                            assert!(
                                positions.len() == 1
                                    || longest * positions.len() <= p.interactive_max_batch_tokens,
                                "over the interactive token budget: {lens:?}"
                            );
                            assert!(
                                lane_width(Lane::Bulk) <= lane_width(Lane::Interactive),
                                "a top-up text widens the batch: {lens:?}"
                            );
                        } else if riders > 0 {
                            assert!(
                                lane_width(Lane::Interactive) <= lane_width(Lane::Bulk),
                                "a rider widens the batch: {lens:?}"
                            );
                            assert!(
                                longest * positions.len() <= p.interactive_max_batch_tokens,
                                "a rider in a batch over the interactive budget: {lens:?}"
                            );
                            assert!(riders < positions.len(), "riders displaced every bulk text");
                        }
                        let mut taken = Vec::new();
                        for &i in positions.iter().rev() {
                            queue.remove(i);
                            taken.push(ids.remove(i).expect("position in range"));
                        }
                        let r = free[0];
                        busy_until[r] =
                            now + 1 + (longest * positions.len() / tokens_per_ms.max(1)) as u64;
                        busy.started(r, at(now), batch_cost(positions.len(), longest));
                        started[r] = true;
                        running[r] = positions.len();
                        cuts.push((now, taken));
                        led.push(interactive);
                        streak = next_streak(
                            streak,
                            interactive,
                            queue.iter().any(|q| q.lane == Lane::Bulk),
                        );
                        continue;
                    }
                    Decision::WaitUntil(t) => {
                        let ms = t.duration_since(t0).as_millis() as u64;
                        assert!(ms > now, "waits for the past");
                        wake = Some(wake.map_or(ms, |w| w.min(ms)));
                        if let Some(b) = soonest_free {
                            wake = Some(wake.map_or(b, |w| w.min(b)));
                        }
                    }
                    Decision::WaitForEngine => {
                        let b = soonest_free.expect("every replica busy means one frees later");
                        wake = Some(wake.map_or(b, |w| w.min(b)));
                    }
                    Decision::Idle => {}
                }
                // Every wake-up (arrival, replica free, deadline) is strictly later.
                match wake {
                    Some(w) => {
                        assert!(w > now, "time must move on");
                        now = w;
                    }
                    None => break,
                }
            }
            assert!(queue.is_empty(), "texts left queued");
            (Trace { cuts }, led)
        }

        /// Padded tokens of CTranslate2's way: sort everything longest first, cut
        /// consecutive batches (written out here, not through `partition`).
        fn sorted_padded(lens: &[usize], p: &Policy) -> usize {
            let mut lens = lens.to_vec();
            lens.sort_unstable_by(|a, b| b.cmp(a));
            let mut total = 0;
            let mut batch: Vec<usize> = Vec::new();
            for len in lens {
                let width = batch.first().copied().unwrap_or(len);
                if !batch.is_empty()
                    && (batch.len() >= p.max_batch_size
                        || width * (batch.len() + 1) > p.max_batch_tokens)
                {
                    total += batch[0] * batch.len();
                    batch.clear();
                }
                batch.push(len);
            }
            total + batch.first().map_or(0, |w| w * batch.len())
        }

        /// (length, beam, arrival, lane): interactive about one text in five.
        fn laned_arrival(until_ms: u64) -> impl Strategy<Value = LanedArrival> {
            (
                1usize..160,
                prop_oneof![Just(1u32), Just(4)],
                0u64..until_ms,
                prop_oneof![4 => Just(Lane::Bulk), 1 => Just(Lane::Interactive)],
            )
        }

        fn policy_strategy() -> impl Strategy<Value = Policy> {
            (
                1usize..48,
                0usize..48,
                64usize..4096,
                0u64..20,
                prop_oneof![Just(0u64), 1u64..400, Just(1_000_000)],
                1usize..6,
                prop_oneof![Just(usize::MAX), 1usize..4096],
                prop_oneof![Just(0u64), 1u64..300],
                0u64..60,
            )
                .prop_map(
                    |(size, min, tokens, wait, delay, burst, interactive_tokens, settle, gap)| {
                        Policy {
                            max_batch_size: size,
                            min_batch_size: min,
                            max_batch_tokens: tokens,
                            max_wait: Duration::from_millis(wait),
                            max_delay: Duration::from_millis(delay),
                            max_queued: 1024,
                            max_settle: Duration::from_millis(settle),
                            settle_gap: Duration::from_millis(gap),
                            interactive_burst: burst,
                            interactive_max_batch_tokens: interactive_tokens,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(proptest::test_runner::Config::with_cases(300))]

            /// Every text is batched exactly once, within the batch limits.
            #[test]
            fn every_text_is_batched_exactly_once(
                mut arrivals in proptest::collection::vec((1usize..160, prop_oneof![Just(1u32), Just(4)], 0u64..2000), 0..300),
                p in policy_strategy(),
                replicas in 1usize..4,
            ) {
                arrivals.sort_by_key(|a| a.2);
                let trace = run(&arrivals, &p, replicas);
                let mut seen: Vec<usize> = trace.cuts.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, (0..arrivals.len()).collect::<Vec<_>>());
            }

            /// The stated bound: once a text has waited max(`max_delay`, `max_wait`), it
            /// is in one of the next k + 1 cuts, k being the texts older than it still
            /// queued then.
            #[test]
            fn no_text_waits_past_the_bound(
                mut arrivals in proptest::collection::vec((1usize..160, prop_oneof![Just(1u32), Just(4)], 0u64..3000), 1..300),
                p in policy_strategy(),
                replicas in 1usize..4,
            ) {
                arrivals.sort_by_key(|a| a.2);
                let trace = run(&arrivals, &p, replicas);
                let delay = p.max_delay.max(p.max_wait).as_millis() as u64;
                let batched_at = cut_of(&trace);
                for (i, a) in arrivals.iter().enumerate() {
                    let due = a.2 + delay;
                    // Cuts made at or after `due`, up to and including this text's.
                    let first_after = trace.cuts.iter().position(|(t, _)| *t >= due);
                    let Some(first_after) = first_after else { continue };
                    let mine = batched_at[&i];
                    if mine < first_after {
                        continue;
                    }
                    // Older texts (smaller index) still queued at `due`.
                    let older_left = (0..i)
                        .filter(|j| arrivals[*j].2 <= due && batched_at[j] >= first_after)
                        .count();
                    prop_assert!(
                        mine - first_after <= older_left,
                        "text {} batched {} cuts after its due time, {} older texts left",
                        i, mine - first_after, older_left
                    );
                }
            }

            /// Lanes: every text is batched exactly once, and `run_lanes` checks at every
            /// cut that interactive texts lead unless bulk has its turn, and that the
            /// streak never passes the burst.
            #[test]
            fn every_laned_text_is_batched_exactly_once(
                mut arrivals in proptest::collection::vec(laned_arrival(2000), 0..300),
                p in policy_strategy(),
                replicas in 1usize..4,
            ) {
                arrivals.sort_by_key(|a| a.2);
                let (trace, _) = run_lanes(&arrivals, &p, replicas);
                let mut seen: Vec<usize> = trace.cuts.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, (0..arrivals.len()).collect::<Vec<_>>());
            }

            /// The stated bounds: once a text has waited max(`max_delay`, `max_wait`),
            /// a bulk text is batched within (burst + 1) × (k + 1) cuts and an
            /// interactive one within k + 2 + ⌊k / burst⌋ cuts, k being the older texts
            /// of its lane still queued then.
            #[test]
            fn no_laned_text_waits_past_its_bound(
                mut arrivals in proptest::collection::vec(laned_arrival(3000), 1..300),
                p in policy_strategy(),
                replicas in 1usize..4,
            ) {
                arrivals.sort_by_key(|a| a.2);
                let (trace, _) = run_lanes(&arrivals, &p, replicas);
                let delay = p.max_delay.max(p.max_wait).as_millis() as u64;
                let burst = p.interactive_burst;
                let batched_at = cut_of(&trace);
                for (i, a) in arrivals.iter().enumerate() {
                    let due = a.2 + delay;
                    let Some(first_after) = trace.cuts.iter().position(|(t, _)| *t >= due) else { continue };
                    let mine = batched_at[&i];
                    if mine < first_after {
                        continue;
                    }
                    let k = (0..i)
                        .filter(|j| arrivals[*j].3 == a.3 && arrivals[*j].2 <= due && batched_at[j] >= first_after)
                        .count();
                    let bound = match a.3 {
                        Lane::Bulk => (burst + 1) * (k + 1) - 1,
                        Lane::Interactive => k + 1 + k / burst,
                    };
                    prop_assert!(
                        mine - first_after <= bound,
                        "{:?} text {} batched {} cuts after its due time (bound {}), {} older left",
                        a.3, i, mine - first_after, bound, k
                    );
                }
            }

            /// Under overload (an engine far slower than the arrivals, so texts wait long
            /// past their due time), the mechanism behind the bounds above: once a text
            /// has waited max(`max_delay`, `max_wait`), every cut its lane leads while it
            /// waits holds a text of its lane at least as old as it (the then-oldest). The
            /// bound tests alone, whose cuts take many texts each, let a policy that cut
            /// the widest run of everything queued when overdue pass (docs/benchmarks-history.md).
            #[test]
            fn no_younger_text_overtakes_a_due_text_under_overload(
                mut arrivals in proptest::collection::vec(laned_arrival(3000), 1..200),
                p in policy_strategy(),
                replicas in 1usize..3,
            ) {
                arrivals.sort_by_key(|a| a.2);
                let (trace, led) = run_lanes_costed(&arrivals, &p, replicas, 1);
                let delay = p.max_delay.max(p.max_wait).as_millis() as u64;
                let batched_at = cut_of(&trace);
                for (i, a) in arrivals.iter().enumerate() {
                    let due = a.2 + delay;
                    let Some(first_after) = trace.cuts.iter().position(|(t, _)| *t >= due) else { continue };
                    let waiting = trace.cuts.iter().zip(&led).enumerate();
                    for (c, ((t, ids), &interactive_led)) in waiting.take(batched_at[&i]).skip(first_after) {
                        prop_assert!(
                            interactive_led != (a.3 == Lane::Interactive)
                                || ids.iter().any(|&j| arrivals[j].3 == a.3 && arrivals[j].2 <= a.2),
                            "cut {} at {} ms overtook {:?} text {} (arrived {} ms, due {} ms) with younger texts only",
                            c, t, a.3, i, a.2, due
                        );
                    }
                }
            }

            /// Under a bulk backlog, an interactive text is batched within a number of
            /// cuts after its arrival that depends on the interactive texts alone,
            /// never on the size of the backlog, whatever the policy.
            #[test]
            fn interactive_texts_overtake_a_bulk_backlog(
                backlog in proptest::collection::vec(1usize..160, 100..400),
                interactive in proptest::collection::vec((1usize..60, 1u64..400), 1..8),
                p in policy_strategy(),
                replicas in 1usize..3,
            ) {
                let mut arrivals: Vec<LanedArrival> = backlog.iter().map(|&l| (l, 1, 0, Lane::Bulk)).collect();
                let mut t = 0;
                for &(len, gap) in &interactive {
                    t += gap;
                    arrivals.push((len, 1, t, Lane::Interactive));
                }
                arrivals.sort_by_key(|a| a.2);
                let (trace, _) = run_lanes(&arrivals, &p, replicas);
                let batched_at = cut_of(&trace);
                // Each cut before this text's either holds another interactive text
                // (m - 1 at most) or is bulk's turn (one per `burst` interactive-led
                // cuts, and one at the start): a constant, whatever the backlog.
                let m = interactive.len();
                let bound = m + m / p.interactive_burst;
                for (i, a) in arrivals.iter().enumerate().filter(|(_, a)| a.3 == Lane::Interactive) {
                    let first = trace.cuts.iter().position(|(t, _)| *t >= a.2).unwrap_or(trace.cuts.len());
                    prop_assert!(
                        batched_at[&i] <= first + bound,
                        "interactive text {} arrived before cut {}, batched at cut {} (bound +{})",
                        i, first, batched_at[&i], bound
                    );
                }
            }

            /// A backlog held all at once pads exactly as sorting it whole does
            /// (CTranslate2's sort-then-cut): taking whole runs, in whatever order,
            /// leaves the other runs as they were. Margin: none.
            #[test]
            fn backlog_pads_close_to_the_sorted_optimum(
                lens in proptest::collection::vec(1usize..160, 1..600),
                p in policy_strategy(),
            ) {
                // A fixed size here: the adaptive one cuts the last texts of a drain from
                // a re-sorted remainder, which can pad more (measured, not bounded).
                // All held at once: the whole backlog is sorted together.
                let p = Policy { min_batch_size: p.max_batch_size, ..p };
                let arrivals: Vec<Arrival> = lens.iter().map(|&l| (l, 1, 0)).collect();
                let padded = |replicas: usize| -> usize {
                    run(&arrivals, &p, replicas)
                        .cuts
                        .iter()
                        .map(|(_, ids)| {
                            let longest = ids.iter().map(|&i| lens[i]).max().unwrap_or(0);
                            longest * ids.len()
                        })
                        .sum()
                };
                let optimum = sorted_padded(&lens, &p);
                // One replica: CTranslate2's batches exactly (margin 0).
                let one = padded(1);
                prop_assert!(
                    one <= optimum,
                    "1 replica: padded {} vs sorted {} ({:.3}x)", one, optimum, one as f64 / optimum as f64
                );
                // Two: the drain re-splits the last two batches' texts to finish
                // together, which pads at most one batch's worth more (the split moves
                // at most `max_batch_size` texts, each padded to at most the longest).
                let longest = lens.iter().copied().max().unwrap_or(0);
                let margin = p.max_batch_size * longest;
                let two = padded(2);
                prop_assert!(
                    two <= optimum + margin,
                    "2 replicas: padded {} vs sorted {} ({:.3}x), margin {}",
                    two, optimum, two as f64 / optimum as f64, margin
                );
            }
        }
    }
}
