//! Which inventory snapshots of one system to keep: every one for a week, then one per day up to
//! 30 days, one per week up to 90 days, one per month up to a year, one per quarter beyond.
//! The first and the latest snapshot of a system are always kept. Pure: the caller lists the
//! snapshots and deletes the ones not returned.
//!
//! # Buckets
//!
//! Buckets are UTC calendar periods that nest: a day lies in one *week of its month* (days
//! 1–7, 8–14, 15–21 and 22 to the end, so a month has four weeks, the last of 7 to 10 days;
//! ISO weeks straddle months and would not nest), a week in one month, a month in one quarter.
//! A snapshot belongs to the coarsest tier whose whole bucket lies beyond that tier's age:
//! the quarter tier if its quarter ended at least 365 days ago, else the month tier if its
//! month ended at least 90 days ago, else the week tier (30 days), else the day tier (7 days),
//! else it is recent and kept. So every snapshot of one bucket is in the same tier, and nothing
//! younger than 7 days is ever dropped.
//!
//! # Which one per bucket
//!
//! The **earliest** snapshot of each bucket is kept. With nested buckets and whole-bucket tiers
//! this makes retention stable over time: the earliest snapshot of a coarse bucket is the
//! earliest of the finer bucket it lies in, so it was kept by every earlier run. Running
//! retention at `t1` and again at `t2 >= t1` keeps exactly what one run at `t2` on the full
//! history would keep: a run never deletes a snapshot that a later run would have wanted, and
//! a kept snapshot stays kept until a coarser bucket already holds an earlier one. (Keeping
//! the latest per bucket would churn: the latest of today is deleted tomorrow.)

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// One stored snapshot of a system: the position of the event it was taken at, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotRef {
    /// When the snapshot's report was recorded (first, so snapshots order by time).
    pub recorded_at: DateTime<Utc>,
    /// Global position of the snapshot's event: the tie breaker and the id to delete by.
    pub position: i64,
}

/// The retention tier a snapshot is in at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Younger than the day tier: always kept.
    Recent,
    /// One per UTC day (7 to 30 days old).
    Day,
    /// One per week of the month (30 to 90 days old).
    Week,
    /// One per month (90 to 365 days old).
    Month,
    /// One per quarter (older than a year).
    Quarter,
}

/// A tier and the start of its bucket: snapshots with equal keys compete for one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    /// The tier.
    pub tier: Tier,
    /// Start of the calendar period (`recorded_at` itself for [`Tier::Recent`]).
    pub start: DateTime<Utc>,
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    let (year, month) = if month > 12 {
        (year + 1, month - 12)
    } else {
        (year, month)
    };
    NaiveDate::from_ymd_opt(year, month, 1).expect("valid first of month")
}

/// `(start, end)` of the bucket of `at` in each calendar tier: day, week of month, month,
/// quarter.
fn periods(at: DateTime<Utc>) -> [(DateTime<Utc>, DateTime<Utc>); 4] {
    let date = at.date_naive();
    let (year, month, day) = (date.year(), date.month(), date.day());
    let day_start = midnight(date);
    let week = ((day - 1) / 7).min(3);
    let week_start = midnight(NaiveDate::from_ymd_opt(year, month, 1 + 7 * week).expect("day"));
    let month_start = midnight(first_of_month(year, month));
    let month_end = midnight(first_of_month(year, month + 1));
    let week_end = if week == 3 {
        month_end
    } else {
        week_start + Duration::days(7)
    };
    let quarter_month = (month - 1) / 3 * 3 + 1;
    let quarter_start = midnight(first_of_month(year, quarter_month));
    let quarter_end = midnight(first_of_month(year, quarter_month + 3));
    [
        (day_start, day_start + Duration::days(1)),
        (week_start, week_end),
        (month_start, month_end),
        (quarter_start, quarter_end),
    ]
}

/// The bucket of a snapshot recorded at `at`, seen at `now`.
pub fn bucket(at: DateTime<Utc>, now: DateTime<Utc>) -> Bucket {
    const TIERS: [(Tier, i64); 4] = [
        (Tier::Day, 7),
        (Tier::Week, 30),
        (Tier::Month, 90),
        (Tier::Quarter, 365),
    ];
    let periods = periods(at);
    for (i, &(tier, min_age_days)) in TIERS.iter().enumerate().rev() {
        let (start, end) = periods[i];
        if end <= now - Duration::days(min_age_days) {
            return Bucket { tier, start };
        }
    }
    Bucket {
        tier: Tier::Recent,
        start: at,
    }
}

/// The snapshots to keep at `now`, in time order: all recent ones, the earliest of each
/// bucket, and the first and the latest of all. Duplicates in the input are kept once.
pub fn retained(snapshots: &[SnapshotRef], now: DateTime<Utc>) -> Vec<SnapshotRef> {
    let mut sorted = snapshots.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let last = sorted.len().saturating_sub(1);
    let mut kept = Vec::new();
    let mut previous: Option<Bucket> = None;
    for (i, snapshot) in sorted.iter().enumerate() {
        let bucket = bucket(snapshot.recorded_at, now);
        // Buckets of time-ordered snapshots are contiguous, so "earliest of its bucket" is
        // "its bucket differs from the previous snapshot's".
        let earliest = bucket.tier == Tier::Recent || previous != Some(bucket);
        if earliest || i == 0 || i == last {
            kept.push(*snapshot);
        }
        previous = Some(bucket);
    }
    kept
}

/// The snapshots to delete at `now`: those not [`retained`], in time order.
pub fn expired(snapshots: &[SnapshotRef], now: DateTime<Utc>) -> Vec<SnapshotRef> {
    let kept = retained(snapshots, now);
    let mut sorted = snapshots.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.retain(|s| kept.binary_search(s).is_err());
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn snap(position: i64, recorded_at: DateTime<Utc>) -> SnapshotRef {
        SnapshotRef {
            recorded_at,
            position,
        }
    }

    #[test]
    fn buckets_follow_the_schedule() {
        let now = at("2026-11-25T12:00:00Z");
        assert_eq!(bucket(at("2026-11-20T00:00:00Z"), now).tier, Tier::Recent);
        let day = bucket(at("2026-11-10T15:00:00Z"), now);
        assert_eq!(
            (day.tier, day.start),
            (Tier::Day, at("2026-11-10T00:00:00Z"))
        );
        let week = bucket(at("2026-09-25T15:00:00Z"), now);
        assert_eq!(
            (week.tier, week.start),
            (Tier::Week, at("2026-09-22T00:00:00Z"))
        );
        let month = bucket(at("2026-03-09T15:00:00Z"), now);
        assert_eq!(
            (month.tier, month.start),
            (Tier::Month, at("2026-03-01T00:00:00Z"))
        );
        let quarter = bucket(at("2025-05-09T15:00:00Z"), now);
        assert_eq!(
            (quarter.tier, quarter.start),
            (Tier::Quarter, at("2025-04-01T00:00:00Z"))
        );
        // The quarter 2025-Q4 ended less than a year ago: its months are still months.
        assert_eq!(bucket(at("2025-10-09T15:00:00Z"), now).tier, Tier::Month);
    }

    #[test]
    fn the_earliest_of_a_day_and_the_first_and_latest_are_kept() {
        let now = at("2026-11-25T12:00:00Z");
        let history = [
            snap(1, at("2026-11-01T01:00:00Z")),
            snap(2, at("2026-11-10T01:00:00Z")),
            snap(3, at("2026-11-10T05:00:00Z")),
            snap(4, at("2026-11-10T09:00:00Z")),
            snap(5, at("2026-11-24T09:00:00Z")),
            snap(6, at("2026-11-24T10:00:00Z")),
        ];
        let kept: Vec<i64> = retained(&history, now).iter().map(|s| s.position).collect();
        assert_eq!(kept, vec![1, 2, 5, 6]);
        let gone: Vec<i64> = expired(&history, now).iter().map(|s| s.position).collect();
        assert_eq!(gone, vec![3, 4]);
        let only_old = [
            snap(1, at("2020-01-01T00:00:00Z")),
            snap(2, at("2020-01-02T00:00:00Z")),
        ];
        assert_eq!(retained(&only_old, now).len(), 2, "first and latest");
        let single = [snap(1, at("2020-01-01T00:00:00Z"))];
        assert_eq!(retained(&single, now), single, "the first is the latest");
    }

    fn history() -> impl Strategy<Value = (Vec<SnapshotRef>, DateTime<Utc>)> {
        // Up to ~3 years of snapshots, dense (minutes apart) or sparse (days apart).
        let now = at("2026-11-25T12:00:00Z");
        let span = 3 * 365 * 24 * 3600i64;
        (
            prop::collection::vec((0..span, 0i64..1_000_000), 0..300),
            prop::collection::vec(0..3600 * 6i64, 0..200),
            0..span,
        )
            .prop_map(move |(sparse, dense_gaps, dense_start)| {
                let mut snapshots: Vec<SnapshotRef> = sparse
                    .into_iter()
                    .map(|(ago, position)| snap(position, now - Duration::seconds(ago)))
                    .collect();
                let mut t = now - Duration::seconds(dense_start);
                for (i, gap) in dense_gaps.into_iter().enumerate() {
                    t += Duration::seconds(gap);
                    if t <= now {
                        snapshots.push(snap(2_000_000 + i as i64, t));
                    }
                }
                (snapshots, now)
            })
    }

    proptest! {
        #[test]
        fn retention_keeps_what_it_promises((snapshots, now) in history()) {
            let kept = retained(&snapshots, now);
            let mut all = snapshots.clone();
            all.sort_unstable();
            all.dedup();
            if let (Some(first), Some(last)) = (all.first(), all.last()) {
                prop_assert_eq!(kept.first(), Some(first));
                prop_assert_eq!(kept.last(), Some(last));
            }
            for s in &all {
                if s.recorded_at > now - Duration::days(7) {
                    prop_assert!(kept.contains(s), "recent {:?} dropped", s);
                }
            }
            // Idempotent.
            prop_assert_eq!(retained(&kept, now), kept.clone());
            // At most one per bucket per tier (besides the first and the latest).
            let inner = if kept.len() > 2 { &kept[1..kept.len() - 1] } else { &[][..] };
            let mut buckets: Vec<Bucket> = inner
                .iter()
                .map(|s| bucket(s.recorded_at, now))
                .filter(|b| b.tier != Tier::Recent)
                .collect();
            let before = buckets.len();
            buckets.dedup();
            prop_assert_eq!(before, buckets.len());
            // Bounded: the recent ones, then at most 34 days (a day waits for its whole week,
            // up to 10 days, to pass 30 days), 15 weeks (its whole month, 90 days),
            // 13 months (its whole quarter, 365 days) and the quarters of 3 years, + first/latest.
            let recent = all.iter().filter(|s| bucket(s.recorded_at, now).tier == Tier::Recent).count();
            prop_assert!(kept.len() <= recent + 34 + 15 + 13 + (4 * 3 + 1) + 2,
                "{} kept, {} recent", kept.len(), recent);
        }

        #[test]
        fn retention_run_twice_over_time_equals_one_run_later(
            (snapshots, now) in history(),
            later_hours in 0i64..24 * 400,
        ) {
            let later = now + Duration::hours(later_hours);
            let once = retained(&snapshots, later);
            let twice = retained(&retained(&snapshots, now), later);
            prop_assert_eq!(once, twice);
        }
    }
}
