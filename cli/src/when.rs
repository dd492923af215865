//! `--detected-at`: the moment an incident was detected, read the way an
//! operator types it at 3 a.m. (much as `journalctl --since` reads it).
//!
//! Owns: the accepted forms, how a time was read (said back in words), and
//! the wording of a refusal (which lists the forms). Refuses: clocks and
//! policy. "Now" and the local time zone are passed in, so tests pin both;
//! how old or how far ahead is too much is `main.rs`'s to decide.

use std::fmt::Display;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// The forms `parse` reads, as one line for an error message and the help text.
pub const FORMS: &str = "2026-11-28T03:12:00+09:00 or ...Z (RFC 3339), 2026-12-02 03:12[:45] (local time; a T works too), \
03:12[:45] (today, or yesterday while still ahead), today 03:12, yesterday 23:10, 10 minutes ago, 90s ago, -15m, -1h30m, now";

/// A time of detection as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// How it was read, e.g. `2026-12-02 03:12:00 +09:00 (local time; 25 min ago)`.
    pub description: String,
}

/// Reads `raw` as a moment at or before `now`; forms without an offset are
/// local times in `now`'s time zone. A time of day alone that lies more than
/// a minute ahead of `now` is yesterday's. Refusals list the accepted forms.
pub fn parse<Tz: TimeZone>(raw: &str, now: &DateTime<Tz>) -> Result<Parsed, String>
where
    Tz::Offset: Display,
{
    let compact = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = compact.to_ascii_lowercase();
    let (at, how) = read(&compact, &lower, now).map_err(|reason| format!("{reason}; accepted forms: {FORMS}"))?;
    let at_ms = at.timestamp_millis();
    let age = age_phrase(now.timestamp_millis().saturating_sub(at_ms));
    let shown = at.format("%Y-%m-%d %H:%M:%S %:z");
    let description = if lower == "now" { format!("{shown} (now)") } else { format!("{shown} ({how}; {age})") };
    Ok(Parsed { at_ms, description })
}

/// A span of time, coarse as a person says it: `45s`, `25 min`, `2h 5m`, `3d 4h`.
pub fn span(ms: i64) -> String {
    let secs = ms.unsigned_abs() / 1000;
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{minutes} min"),
        3600..=86_399 if minutes == 0 => format!("{hours}h"),
        3600..=86_399 => format!("{hours}h {minutes}m"),
        _ if hours == 0 => format!("{days}d"),
        _ => format!("{days}d {hours}h"),
    }
}

fn age_phrase(age_ms: i64) -> String {
    if age_ms < 0 {
        format!("in {}", span(age_ms))
    } else if age_ms < 1000 {
        "now".into()
    } else {
        format!("{} ago", span(age_ms))
    }
}

/// The instant and how it was read; on failure, why (without the forms).
fn read<Tz: TimeZone>(compact: &str, lower: &str, now: &DateTime<Tz>) -> Result<(DateTime<Tz>, String), String> {
    let tz = now.timezone();
    if lower.is_empty() {
        return Err("no time given".into());
    }
    if lower == "now" {
        return Ok((now.clone(), "now".into()));
    }
    if let Some(span) = lower.strip_prefix('-').or_else(|| lower.strip_suffix("ago")).map(str::trim) {
        let Some(ms) = parse_span(span) else {
            return Err(format!("{compact:?} is not a span like 10 minutes, 90s or 1h30m"));
        };
        let at = now
            .timestamp_millis()
            .checked_sub(ms)
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .ok_or_else(|| format!("{compact:?} is too far back"))?;
        return Ok((at.with_timezone(&tz), "relative".into()));
    }
    for (word, days_back) in [("today ", 0), ("yesterday ", 1)] {
        if let Some(rest) = lower.strip_prefix(word) {
            let time = time_of_day(rest).ok_or_else(|| format!("{rest:?} is not a time of day like 03:12 or 03:12:45"))?;
            let day = days_before(now.date_naive(), days_back)?;
            let (at, note) = localize(&tz, day.and_time(time))?;
            return Ok((at, format!("{}, local time{note}", word.trim())));
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(compact) {
        return Ok((at.with_timezone(&tz), "RFC 3339".into()));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(compact, format) {
            let (at, note) = localize(&tz, naive)?;
            return Ok((at, format!("local time{note}")));
        }
    }
    if let Some(time) = time_of_day(compact) {
        let today = now.date_naive();
        let (at, note) = localize(&tz, today.and_time(time))?;
        if at.timestamp_millis() <= now.timestamp_millis().saturating_add(60_000) {
            return Ok((at, format!("today, local time{note}")));
        }
        let (at, note) = localize(&tz, days_before(today, 1)?.and_time(time))?;
        let said = time.format("%H:%M");
        return Ok((at, format!("yesterday, local time{note}: {said} today is still ahead")));
    }
    Err(format!("{compact:?} is not a time dr reads"))
}

fn time_of_day(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M:%S").or_else(|_| NaiveTime::parse_from_str(text, "%H:%M")).ok()
}

fn days_before(day: NaiveDate, days: u64) -> Result<NaiveDate, String> {
    day.checked_sub_days(chrono::Days::new(days)).ok_or_else(|| "that day is out of range".to_owned())
}

/// A wall-clock time in the local zone: the earlier instant when the clocks
/// went back (said in the note), refused when they skipped it.
fn localize<Tz: TimeZone>(tz: &Tz, naive: NaiveDateTime) -> Result<(DateTime<Tz>, &'static str), String> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(at) => Ok((at, "")),
        LocalResult::Ambiguous(earlier, _) => Ok((earlier, ", the earlier of the two (the clocks went back)")),
        LocalResult::None => Err(format!("{naive} does not exist in the local time zone (the clocks skipped it)")),
    }
}

/// `10 minutes`, `90s`, `1h30m`, `2 hours 30 min`: milliseconds.
fn parse_span(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    let mut total: i64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let count: i64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return None,
        };
        rest = rest[letters..].trim_start();
        total = total.checked_add(count.checked_mul(unit)?)?;
    }
    // Keep clear of chrono's limits: a span that large is a typo.
    (total <= Duration::days(365 * 100).num_milliseconds()).then_some(total)
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    /// 2026-12-02 03:37:00 in Tokyo (+09:00): 2026-12-01T18:37:00Z.
    fn tokyo_now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-12-02T03:37:00+09:00").unwrap()
    }

    fn check(raw: &str, expect: &str) {
        check_at(raw, &tokyo_now(), expect);
    }

    fn check_at(raw: &str, now: &DateTime<FixedOffset>, expect: &str) {
        let parsed = parse(raw, now).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
        assert_eq!(parsed.description, expect, "{raw:?}");
        let again = DateTime::parse_from_str(&parsed.description[..26], "%Y-%m-%d %H:%M:%S %:z").unwrap();
        assert_eq!(again.timestamp_millis(), parsed.at_ms, "{raw:?}: the description names the instant");
    }

    fn refused(raw: &str) -> String {
        let err = parse(raw, &tokyo_now()).expect_err(raw);
        assert!(err.contains(FORMS), "{raw:?}: the refusal lists the forms: {err}");
        assert!(!err.contains("premature") && !err.contains('\n'), "{raw:?}: {err}");
        err
    }

    #[test]
    fn reads_rfc3339_in_any_offset_and_shows_it_in_local_time() {
        check("2026-11-28T03:12:00+09:00", "2026-11-28 03:12:00 +09:00 (RFC 3339; 4d ago)");
        check("2026-12-01T18:12:00Z", "2026-12-02 03:12:00 +09:00 (RFC 3339; 25 min ago)");
        check(" 2026-12-01T18:12:00Z ", "2026-12-02 03:12:00 +09:00 (RFC 3339; 25 min ago)");
        assert_eq!(parse("2026-12-01T18:12:00.500Z", &tokyo_now()).unwrap().at_ms % 1000, 500);
    }

    #[test]
    fn reads_local_date_times_in_the_local_offset() {
        check("2026-12-02 03:12", "2026-12-02 03:12:00 +09:00 (local time; 25 min ago)");
        check("2026-12-02 03:12:45", "2026-12-02 03:12:45 +09:00 (local time; 24 min ago)");
        check("2026-12-02T03:12:00", "2026-12-02 03:12:00 +09:00 (local time; 25 min ago)");
        check("2026-12-02T03:12", "2026-12-02 03:12:00 +09:00 (local time; 25 min ago)");
        check("2026-12-01  22:00", "2026-12-01 22:00:00 +09:00 (local time; 5h 37m ago)");
        let utc = DateTime::parse_from_rfc3339("2026-12-01T18:37:00Z").unwrap();
        check_at("2026-12-01 18:12", &utc, "2026-12-01 18:12:00 +00:00 (local time; 25 min ago)");
    }

    #[test]
    fn a_time_of_day_is_today() {
        check("03:12", "2026-12-02 03:12:00 +09:00 (today, local time; 25 min ago)");
        check("03:12:45", "2026-12-02 03:12:45 +09:00 (today, local time; 24 min ago)");
        check("00:00", "2026-12-02 00:00:00 +09:00 (today, local time; 3h 37m ago)");
        // Up to a minute ahead is a clock's skew, still today.
        check("03:38", "2026-12-02 03:38:00 +09:00 (today, local time; in 1 min)");
    }

    #[test]
    fn a_time_of_day_still_ahead_is_yesterday() {
        check("23:10", "2026-12-01 23:10:00 +09:00 (yesterday, local time: 23:10 today is still ahead; 4h 27m ago)");
        check("03:39", "2026-12-01 03:39:00 +09:00 (yesterday, local time: 03:39 today is still ahead; 23h 58m ago)");
        // Across a month's end.
        let first = DateTime::parse_from_rfc3339("2026-12-01T01:00:00+09:00").unwrap();
        check_at("23:10", &first, "2026-11-30 23:10:00 +09:00 (yesterday, local time: 23:10 today is still ahead; 1h 50m ago)");
    }

    #[test]
    fn reads_today_and_yesterday_with_a_time() {
        check("yesterday 23:10", "2026-12-01 23:10:00 +09:00 (yesterday, local time; 4h 27m ago)");
        check("Yesterday 23:10:30", "2026-12-01 23:10:30 +09:00 (yesterday, local time; 4h 26m ago)");
        check("today 03:12", "2026-12-02 03:12:00 +09:00 (today, local time; 25 min ago)");
        // Said as today, kept as today: the caller refuses the future.
        check("today 23:10", "2026-12-02 23:10:00 +09:00 (today, local time; in 19h 33m)");
    }

    #[test]
    fn reads_relative_spans() {
        check("10 minutes ago", "2026-12-02 03:27:00 +09:00 (relative; 10 min ago)");
        check("2 hours ago", "2026-12-02 01:37:00 +09:00 (relative; 2h ago)");
        check("90s ago", "2026-12-02 03:35:30 +09:00 (relative; 1 min ago)");
        check("1 hour 30 min ago", "2026-12-02 02:07:00 +09:00 (relative; 1h 30m ago)");
        check("-15m", "2026-12-02 03:22:00 +09:00 (relative; 15 min ago)");
        check("-2h", "2026-12-02 01:37:00 +09:00 (relative; 2h ago)");
        check("-1h30m", "2026-12-02 02:07:00 +09:00 (relative; 1h 30m ago)");
        check("-3d", "2026-11-29 03:37:00 +09:00 (relative; 3d ago)");
        check("NOW", "2026-12-02 03:37:00 +09:00 (now)");
        check("now", "2026-12-02 03:37:00 +09:00 (now)");
    }

    #[test]
    fn the_help_of_detected_at_lists_the_same_forms() {
        use clap::CommandFactory;
        let cli = crate::args::Cli::command();
        let start = cli.find_subcommand("start").unwrap();
        let arg = start.get_arguments().find(|a| a.get_id() == "detected_at").unwrap();
        let help = arg.get_help().unwrap().to_string();
        assert!(help.contains(FORMS), "--detected-at's help and when::FORMS differ: {help}");
    }

    #[test]
    fn spans_read_as_a_person_says_them() {
        for (ms, said) in [(0, "0s"), (59_999, "59s"), (60_000, "1 min"), (3_600_000, "1h"), (3_660_000, "1h 1m"), (86_400_000, "1d"), (273_600_000, "3d 4h")] {
            assert_eq!(span(ms), said, "{ms}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_and_lists_the_forms() {
        assert!(refused("").contains("no time given"));
        assert!(refused("   ").contains("no time given"));
        assert!(refused("25:00").contains("\"25:00\" is not a time dr reads"));
        assert!(refused("garbage").contains("\"garbage\""));
        assert!(refused("yesterday-ish garbage").contains("not a time dr reads"));
        assert!(refused("yesterday").contains("not a time dr reads"));
        assert!(refused("yesterday 25:00").contains("not a time of day"));
        assert!(refused("10 fortnights ago").contains("not a span"));
        assert!(refused("-").contains("not a span"));
        assert!(refused("ago").contains("not a span"));
        assert!(refused("-99999999999999999999h").contains("not a span"));
        assert!(refused("2026-13-01 03:12").contains("not a time dr reads"));
        assert!(refused("2026-11-28T03:12:00+25:00").contains("not a time dr reads"));
    }
}
