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

/// Parses a time as the message commands take it: `+seconds` from now, or an absolute
/// `YY[MM[DD[HH[MM[SS]]]]]` (its first second).
pub fn parse_time_spec(field: &str, text: &str) -> crate::QmResult<crate::message::TimeSpec> {
    if let Some(rel) = text.strip_prefix('+') {
        let secs = rel.parse::<u64>().map_err(|_| {
            crate::QmError::invalid(field, text, "write +seconds or YY[MM[DD[HH[MM[SS]]]]]")
        })?;
        return Ok(crate::message::TimeSpec::Relative(secs));
    }
    Ok(crate::message::TimeSpec::Absolute(parse_tuxedo_time(field, text)?.0))
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
    }
}
