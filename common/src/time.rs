//! Times as qm shows and takes them: seconds since the Unix epoch inside, local time
//! `YYYY-MM-DD HH:MM:SS` for people.

use chrono::{Local, TimeZone};

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Local time of `secs`, e.g. `2026-11-23 07:31:58`.
pub fn format_local(secs: u64) -> String {
    match Local.timestamp_opt(secs as i64, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => secs.to_string(),
    }
}

/// Parses Tuxedo's `YY[MM[DD[HH[MM[SS]]]]]` local time: omitted units take their lowest
/// value; years 00-37 are 2000-2037, 70-99 are 1970-1999. Returns the first and the last
/// second the text covers (`2511` covers all of November 2025).
pub fn parse_tuxedo_time(field: &str, text: &str) -> crate::QmResult<(u64, u64)> {
    use chrono::{Duration, NaiveDate};
    let bad = |why: &str| crate::QmError::invalid(field, text, why);
    let format = "write YY[MM[DD[HH[MM[SS]]]]] (e.g. 251123 or 2511231830)";
    if text.is_empty()
        || !text.len().is_multiple_of(2)
        || text.len() > 12
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format));
    }
    let parts: Vec<u32> = text
        .as_bytes()
        .chunks(2)
        .map(|c| u32::from(c[0] - b'0') * 10 + u32::from(c[1] - b'0'))
        .collect();
    let year = match parts[0] {
        y @ 0..=37 => 2000 + y as i32,
        y @ 70..=99 => 1900 + y as i32,
        _ => return Err(bad("years 38 to 69 cannot be written; use 00-37 (2000-2037) or 70-99")),
    };
    let get = |i: usize, lowest: u32| parts.get(i).copied().unwrap_or(lowest);
    let (month, day, hour, minute, second) =
        (get(1, 1), get(2, 1), get(3, 0), get(4, 0), get(5, 0));
    let start = NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(hour, minute, second))
        .ok_or_else(|| bad("no such date or time"))?;
    let end = match parts.len() {
        1 => NaiveDate::from_ymd_opt(year + 1, 1, 1)
            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default()),
        2 => {
            let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            NaiveDate::from_ymd_opt(y, m, 1).map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        }
        3 => Some(start + Duration::days(1)),
        4 => Some(start + Duration::hours(1)),
        5 => Some(start + Duration::minutes(1)),
        _ => Some(start + Duration::seconds(1)),
    }
    .ok_or_else(|| bad("no such date or time"))?;
    let local = |t: chrono::NaiveDateTime| {
        Local
            .from_local_datetime(&t)
            .earliest()
            .map(|t| t.timestamp().max(0) as u64)
            .ok_or_else(|| bad("no such local time"))
    };
    Ok((local(start)?, local(end)?.saturating_sub(1)))
}

/// How the message commands take a time, for error messages.
pub const TIME_FORMS: &str =
    "write +seconds or YY[MM[DD[HH[MM[SS]]]]] (e.g. +60, 251123 or 2511231830)";

/// The latest time that can be written: the last second of 2037, local time (years 00-37
/// are 2000-2037). Relative times are bounded so that they end no later.
pub fn latest_secs() -> u64 {
    use chrono::NaiveDate;
    NaiveDate::from_ymd_opt(2037, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .and_then(|t| Local.from_local_datetime(&t).latest())
        .map_or(2_145_916_799, |t| t.timestamp().max(0) as u64)
}

/// The most seconds a relative time (`+seconds`) may be from now.
pub fn max_relative_secs() -> u64 {
    latest_secs().saturating_sub(now_secs())
}

/// Checks a relative time of `secs` from now against [`max_relative_secs`].
pub fn check_relative(field: &str, text: &str, secs: u64) -> crate::QmResult<u64> {
    let max = max_relative_secs();
    if secs > max {
        return Err(crate::QmError::invalid(
            field,
            text,
            &format!("+seconds must be 0 to {max} (times end at {})", format_local(latest_secs())),
        ));
    }
    Ok(secs)
}

/// Checks an absolute time against [`latest_secs`].
pub fn check_absolute(field: &str, text: &str, secs: u64) -> crate::QmResult<u64> {
    if secs > latest_secs() {
        return Err(crate::QmError::invalid(
            field,
            text,
            &format!("times end at {}", format_local(latest_secs())),
        ));
    }
    Ok(secs)
}

/// Whether `text` has the shape of a time: `+digits` or up to six pairs of digits.
pub fn looks_like_time(text: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match text.strip_prefix('+') {
        Some(rel) => digits(rel),
        None => digits(text) && text.len().is_multiple_of(2) && text.len() <= 12,
    }
}

/// Parses a time as the message commands take it: `+seconds` from now (so that it ends by
/// the end of 2037, as absolute times do), or an absolute `YY[MM[DD[HH[MM[SS]]]]]` (its
/// first second).
pub fn parse_time_spec(field: &str, text: &str) -> crate::QmResult<crate::message::TimeSpec> {
    if !looks_like_time(text) {
        return Err(crate::QmError::invalid(field, text, TIME_FORMS));
    }
    if let Some(rel) = text.strip_prefix('+') {
        // All digits: only too many of them fail to parse.
        let secs = rel.parse::<u64>().unwrap_or(u64::MAX);
        return Ok(crate::message::TimeSpec::Relative(check_relative(field, text, secs)?));
    }
    Ok(crate::message::TimeSpec::Absolute(parse_tuxedo_time(field, text)?.0))
}

/// Parses an expiration time: `+seconds` (ending by the end of 2037), an absolute
/// `YY[MM[DD[HH[MM[SS]]]]]`, or `none` (never).
pub fn parse_expiry(text: &str) -> crate::QmResult<crate::message::Expiry> {
    use crate::message::{Expiry, TimeSpec};
    if text.eq_ignore_ascii_case("none") {
        return Ok(Expiry::Never);
    }
    if !looks_like_time(text) {
        return Err(crate::QmError::invalid(
            "Expiration time",
            text,
            "write +seconds, YY[MM[DD[HH[MM[SS]]]]] or none",
        ));
    }
    Ok(match parse_time_spec("Expiration time", text)? {
        TimeSpec::Absolute(s) => Expiry::Absolute(s),
        TimeSpec::Relative(s) => Expiry::Relative(s),
    })
}

/// A wait as people say it: `2 s` for whole seconds (as `-w 2` asks), else `250 ms`.
pub fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) && ms > 0 {
        crate::plural::count(ms / 1000, "second", "seconds")
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuxedo_times() {
        let (a, b) = parse_tuxedo_time("t", "7502").unwrap();
        assert_eq!(format_local(a), "1975-02-01 00:00:00");
        assert_eq!(format_local(b), "1975-02-28 23:59:59");
        let (a, b) = parse_tuxedo_time("t", "251123183005").unwrap();
        assert_eq!(a, b);
        assert_eq!(format_local(a), "2025-11-23 18:30:05");
        assert!(parse_tuxedo_time("t", "5001").is_err());
        assert!(parse_tuxedo_time("t", "251").is_err());
        assert!(parse_tuxedo_time("t", "251332").is_err());
        assert_eq!(parse_time_spec("t", "+30").unwrap(), crate::message::TimeSpec::Relative(30));
        let max = max_relative_secs();
        assert!(parse_time_spec("t", &format!("+{max}")).is_ok());
        let e = parse_time_spec("t", "+99999999999").unwrap_err().message;
        assert!(e.contains("+seconds must be 0 to") && e.contains("2037-12-31 23:59:59"), "{e}");
        assert!(parse_time_spec("t", "+99999999999999999999999").is_err());
        for bad in ["garbage", "+", "+x", "251", "-5"] {
            let e = parse_time_spec("t", bad).unwrap_err().message;
            assert!(e.contains("+seconds") && e.contains("YY[MM[DD[HH[MM[SS]]]]]"), "{e}");
        }
    }
}
