//! Which snapshots a retention policy keeps, and why. Pure: times in,
//! decisions out; `forget` does the I/O.
//!
//! Semantics follow restic's `forget`:
//! - `keep_last N`: the N newest snapshots.
//! - `keep_daily N`: for each of the N most recent days that have a
//!   snapshot, the newest snapshot of that day (likewise weekly, by ISO
//!   week, and monthly).
//! - `keep_within D`: every snapshot less than D older than the newest one.
//!
//! Days, weeks and months are those of the wall clock that took each
//! snapshot (its recorded UTC offset), so a backup at 00:30 local time
//! belongs to that local day whatever the time zone of the host running
//! `forget`, and daylight-saving changes do not move snapshots between days.
//! `keep_within` compares wall-clock times too: "30d" keeps exactly the
//! snapshots of the last 30 days of a daily 02:00 schedule across a DST
//! change, where 30×24 hours would keep 29 or 31.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDateTime};
use serde::Serialize;

use crate::repository::config::Retention;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_within: Option<Duration>,
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Last,
    Daily,
    Weekly,
    Monthly,
    Within,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Refuse rules that keep nothing: `--keep-last 0` alone would remove
    /// every snapshot, and beside other rules it means nothing.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("keep-last", self.keep_last),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
        ];
        if let Some((rule, _)) = counts.iter().find(|(_, n)| *n == Some(0)) {
            return Err(format!(
                "--{rule} 0 keeps nothing; refusing (to remove a departed account's backups: \
                 forget --account NAME --all)"
            ));
        }
        if self.keep_within.is_some_and(|d| d <= Duration::zero()) {
            return Err("--keep-within must be longer than 0".into());
        }
        Ok(())
    }

    pub fn from_config(r: &Retention) -> Policy {
        Policy {
            // A duration past what time arithmetic holds keeps everything,
            // as the longest one does.
            keep_within: r.keep_within_seconds.map(|s| {
                i64::try_from(s)
                    .ok()
                    .and_then(Duration::try_seconds)
                    .unwrap_or(Duration::MAX)
            }),
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
        }
    }

    /// For each snapshot time (any order), the reasons to keep it; an empty
    /// list means it goes.
    pub fn apply(&self, times: &[DateTime<FixedOffset>]) -> Vec<Vec<Reason>> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        // Newest first; ties broken by position for a stable answer.
        order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));
        let mut reasons = vec![Vec::new(); times.len()];
        let local = |i: usize| times[i].naive_local();

        let mut bucketed =
            |count: Option<u32>,
             reason: Reason,
             bucket: &dyn Fn(usize, NaiveDateTime) -> (i64, u32, u32)| {
                let Some(mut left) = count else { return };
                let mut last = None;
                for &i in &order {
                    if left == 0 {
                        break;
                    }
                    let b = bucket(i, local(i));
                    if last != Some(b) {
                        reasons[i].push(reason.clone());
                        last = Some(b);
                        left -= 1;
                    }
                }
            };
        // keep-last: every snapshot is a bucket of its own.
        bucketed(self.keep_last, Reason::Last, &|i, _| (i as i64, 0, 0));
        bucketed(self.keep_daily, Reason::Daily, &|_, t| {
            (t.year().into(), t.month(), t.day())
        });
        bucketed(self.keep_weekly, Reason::Weekly, &|_, t| {
            let w = t.iso_week();
            (w.year().into(), w.week(), 0)
        });
        bucketed(self.keep_monthly, Reason::Monthly, &|_, t| {
            (t.year().into(), t.month(), 0)
        });

        if let (Some(within), Some(&newest)) = (self.keep_within, order.first()) {
            // Before the first representable time: everything is within.
            let threshold = local(newest).checked_sub_signed(within);
            for &i in &order {
                if threshold.is_none_or(|t| local(i) > t) {
                    reasons[i].push(Reason::Within);
                }
            }
        }
        reasons
    }
}

/// Parse "30d", "12h", "2w", "1d12h" into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::zero();
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a number before {c:?}"))?;
        number.clear();
        let part = match c {
            'w' => Duration::try_weeks(n),
            'd' => Duration::try_days(n),
            'h' => Duration::try_hours(n),
            'm' => Duration::try_minutes(n),
            's' => Duration::try_seconds(n),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {c:?} (use w, d, h, m or s)"
                ))
            }
        };
        total = part
            .and_then(|p| total.checked_add(&p))
            .ok_or_else(|| format!("{text:?}: too long (at most about 292 million years)"))?;
    }
    if !number.is_empty() || total.is_zero() {
        return Err(format!(
            "{text:?}: expected a duration like 30d, 12h or 1d12h"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "2026-11-24 02:00 +01:00" → a time.
    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_str(s, "%Y-%m-%d %H:%M %:z").unwrap()
    }

    fn kept(policy: &Policy, times: &[&str]) -> Vec<String> {
        let parsed: Vec<_> = times.iter().map(|s| t(s)).collect();
        let reasons = policy.apply(&parsed);
        times
            .iter()
            .zip(reasons)
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, _)| s.to_string())
            .collect()
    }

    fn days(n: u32, start_day: u32, time: &str) -> Vec<String> {
        (0..n)
            .map(|d| format!("2026-10-{:02} {time}", start_day + d))
            .collect()
    }

    #[test]
    fn retention_table() {
        struct Case {
            name: &'static str,
            policy: Policy,
            times: Vec<String>,
            kept: Vec<&'static str>,
        }
        let daily = |n| Policy {
            keep_daily: Some(n),
            ..Policy::default()
        };
        let cases = vec![
            Case {
                name: "keep-last keeps the newest N whatever the days",
                policy: Policy {
                    keep_last: Some(2),
                    ..Policy::default()
                },
                times: vec![
                    "2026-11-01 02:00 +00:00".into(),
                    "2026-11-02 02:00 +00:00".into(),
                    "2026-11-02 14:00 +00:00".into(),
                ],
                kept: vec!["2026-11-02 02:00 +00:00", "2026-11-02 14:00 +00:00"],
            },
            Case {
                name: "keep-daily keeps the newest of each day",
                policy: daily(2),
                times: vec![
                    "2026-11-01 02:00 +00:00".into(),
                    "2026-11-02 02:00 +00:00".into(),
                    "2026-11-02 14:00 +00:00".into(),
                ],
                kept: vec!["2026-11-01 02:00 +00:00", "2026-11-02 14:00 +00:00"],
            },
            Case {
                name: "keep-daily counts days that have snapshots, skipping gaps",
                policy: daily(3),
                times: vec![
                    "2026-11-01 02:00 +00:00".into(),
                    "2026-11-05 02:00 +00:00".into(),
                    "2026-11-09 02:00 +00:00".into(),
                    "2026-11-20 02:00 +00:00".into(),
                ],
                kept: vec![
                    "2026-11-05 02:00 +00:00",
                    "2026-11-09 02:00 +00:00",
                    "2026-11-20 02:00 +00:00",
                ],
            },
            Case {
                name: "days are the snapshot's own local days",
                policy: daily(1),
                // 23:30 UTC on the 1st is 00:30 on the 2nd in +01:00.
                times: vec![
                    "2026-11-02 00:30 +01:00".into(),
                    "2026-11-02 00:10 +01:00".into(),
                ],
                kept: vec!["2026-11-02 00:30 +01:00"],
            },
            Case {
                name: "keep-weekly by ISO week",
                policy: Policy {
                    keep_weekly: Some(2),
                    ..Policy::default()
                },
                // Mon 2 Nov, Sun 8 Nov (same week), Mon 9 Nov.
                times: vec![
                    "2026-11-02 02:00 +00:00".into(),
                    "2026-11-08 02:00 +00:00".into(),
                    "2026-11-09 02:00 +00:00".into(),
                ],
                kept: vec!["2026-11-08 02:00 +00:00", "2026-11-09 02:00 +00:00"],
            },
            Case {
                name: "keep-monthly",
                policy: Policy {
                    keep_monthly: Some(1),
                    ..Policy::default()
                },
                times: vec![
                    "2026-10-31 02:00 +00:00".into(),
                    "2026-11-01 02:00 +00:00".into(),
                    "2026-11-15 02:00 +00:00".into(),
                ],
                kept: vec!["2026-11-15 02:00 +00:00"],
            },
            Case {
                name: "keep-within is relative to the newest snapshot, not now",
                policy: Policy {
                    keep_within: Some(Duration::days(2)),
                    ..Policy::default()
                },
                times: vec![
                    "2020-01-01 02:00 +00:00".into(),
                    "2020-01-02 02:00 +00:00".into(),
                    "2020-01-03 02:00 +00:00".into(),
                ],
                kept: vec!["2020-01-02 02:00 +00:00", "2020-01-03 02:00 +00:00"],
            },
            Case {
                name: "keep-within 30d across the autumn DST change keeps 30 daily snapshots",
                policy: Policy {
                    keep_within: Some(Duration::days(30)),
                    ..Policy::default()
                },
                // Central Europe: +02:00 until 25 Oct, +01:00 after.
                times: (10..=25)
                    .map(|d| format!("2026-10-{d:02} 02:00 +02:00"))
                    .chain((26..=31).map(|d| format!("2026-10-{d:02} 02:00 +01:00")))
                    .chain((1..=15).map(|d| format!("2026-11-{d:02} 02:00 +01:00")))
                    .collect(),
                kept: vec![],
            },
            Case {
                name: "several rules: union of what each keeps",
                policy: Policy {
                    keep_last: Some(1),
                    keep_monthly: Some(2),
                    ..Policy::default()
                },
                times: days(5, 1, "02:00 +00:00")
                    .into_iter()
                    .chain(["2026-09-15 02:00 +00:00".to_string()])
                    .collect(),
                kept: vec!["2026-10-05 02:00 +00:00", "2026-09-15 02:00 +00:00"],
            },
        ];
        for case in cases {
            let times: Vec<&str> = case.times.iter().map(String::as_str).collect();
            let got = kept(&case.policy, &times);
            if case.name.contains("DST") {
                assert_eq!(got.len(), 30, "{}: {got:?}", case.name);
                assert_eq!(got[0], "2026-10-17 02:00 +02:00", "{}", case.name);
            } else {
                assert_eq!(got, case.kept, "{}", case.name);
            }
        }
    }

    #[test]
    fn a_very_long_keep_within_keeps_everything() {
        for within in [Duration::days(99_999_999), Duration::MAX] {
            let policy = Policy {
                keep_within: Some(within),
                ..Policy::default()
            };
            let times = ["1970-01-01 00:00 +00:00", "2026-11-24 02:00 +01:00"];
            assert_eq!(kept(&policy, &times).len(), 2);
        }
        let huge = Retention {
            keep_within_seconds: Some(u64::MAX),
            ..Retention::default()
        };
        assert_eq!(Policy::from_config(&huge).keep_within, Some(Duration::MAX));
    }

    #[test]
    fn rules_that_keep_nothing_are_refused() {
        for policy in [
            Policy {
                keep_last: Some(0),
                ..Policy::default()
            },
            Policy {
                keep_daily: Some(0),
                keep_weekly: Some(4),
                ..Policy::default()
            },
            Policy {
                keep_monthly: Some(0),
                ..Policy::default()
            },
        ] {
            assert!(policy.check().unwrap_err().contains("keeps nothing"));
        }
        assert!(Policy {
            keep_daily: Some(1),
            ..Policy::default()
        }
        .check()
        .is_ok());
    }

    #[test]
    fn spring_dst_change_keeps_30_too() {
        let policy = Policy {
            keep_within: Some(Duration::days(30)),
            ..Policy::default()
        };
        let times: Vec<String> = (1..=28)
            .map(|d| format!("2026-03-{d:02} 02:00 +01:00"))
            .chain((29..=31).map(|d| format!("2026-03-{d:02} 02:00 +02:00")))
            .chain((1..=10).map(|d| format!("2026-04-{d:02} 02:00 +02:00")))
            .collect();
        let refs: Vec<&str> = times.iter().map(String::as_str).collect();
        assert_eq!(kept(&policy, &refs).len(), 30);
    }

    #[test]
    fn empty_policy_and_durations() {
        assert!(Policy::default().is_empty());
        assert_eq!(parse_duration("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_duration("1d12h").unwrap(), Duration::hours(36));
        assert_eq!(parse_duration("2w").unwrap(), Duration::days(14));
        for bad in ["", "30", "d", "3x", "0d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Long ones: a valid "forever", or a clear error; never a panic.
        assert_eq!(
            parse_duration("99999999d").unwrap(),
            Duration::days(99_999_999)
        );
        for too_long in [
            "999999999999999d",
            "9223372036854775807s",
            "99999999999999w1d",
        ] {
            let err = parse_duration(too_long).unwrap_err();
            assert!(err.contains("too long"), "{too_long}: {err}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        let from_config = Policy::from_config(&Retention::thirty_days());
        assert_eq!(from_config.keep_within, Some(Duration::days(30)));
    }
}
