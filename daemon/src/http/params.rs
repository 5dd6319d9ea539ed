//! Query parameters of the message paths, read into the same TPQCTL controls qmadmin's
//! `qenqueue` and `qdequeue` build, with the same time forms and limits.
//!
//! Values are percent-decoded; a `+` stands for itself (so `available=+60` means 60 seconds
//! from now), a blank is written `%20`.

use qm_common::message::{DequeueCtl, EnqueueCtl, MsgId, Qos, Select, parse_corrid};
use qm_common::time::{parse_expiry, parse_time_spec};
use qm_common::{QmError, QmResult};

/// The parameters an enqueue takes.
pub const ENQUEUE: &[&str] = &[
    "priority",
    "corrid",
    "reply_queue",
    "failure_queue",
    "delivery",
    "reply_qos",
    "available",
    "expiration",
    "urcode",
];

/// The parameters a dequeue takes.
pub const DEQUEUE: &[&str] = &["wait", "msgid", "corrid", "peek"];

/// Longest wait of a dequeue, in seconds (as qmadmin's `qdequeue -w`).
const WAIT_MAX: u64 = 86_400;

/// The decoded parameters of a query, each named once and known to `allowed`.
pub fn parse(query: Option<&str>, allowed: &[&str]) -> QmResult<Vec<(String, String)>> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if !allowed.contains(&name.as_str()) {
            return Err(QmError::invalid(
                "Query parameter",
                &name,
                &format!("the parameters here are {}", allowed.join(", ")),
            ));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(QmError::inval(format!("Query parameter {name} is given twice")));
        }
        params.push((name, value));
    }
    Ok(params)
}

fn decode(text: &str) -> QmResult<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().map(|t| t.into_owned()).map_err(|_| {
        QmError::invalid("Query", text, "it must be UTF-8 once its %xx escapes are decoded")
    })
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    field: &str,
    text: &str,
    range: std::ops::RangeInclusive<T>,
) -> QmResult<T> {
    text.parse::<T>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        QmError::invalid(field, text, &format!("give {} to {}", range.start(), range.end()))
    })
}

/// The enqueue controls in `query`.
pub fn enqueue_ctl(query: Option<&str>) -> QmResult<EnqueueCtl> {
    let mut ctl = EnqueueCtl::default();
    for (name, value) in parse(query, ENQUEUE)? {
        let v = value.as_str();
        match name.as_str() {
            "priority" => ctl.priority = Some(number("priority", v, 1..=100u8)?),
            "corrid" => ctl.corrid = parse_corrid(v)?,
            "reply_queue" => ctl.reply_queue = Some(value),
            "failure_queue" => ctl.failure_queue = Some(value),
            "delivery" => ctl.delivery = Some(v.parse::<Qos>()?),
            "reply_qos" => ctl.reply_qos = Some(v.parse::<Qos>()?),
            "available" => ctl.available = Some(parse_time_spec("available", v)?),
            "expiration" => ctl.expiration = Some(parse_expiry(v)?),
            _ => ctl.urcode = number("urcode", v, i64::MIN..=i64::MAX)?,
        }
    }
    ctl.validate()?;
    Ok(ctl)
}

/// The dequeue controls in `query`.
pub fn dequeue_ctl(query: Option<&str>) -> QmResult<DequeueCtl> {
    let mut ctl = DequeueCtl::default();
    let mut by_msgid = None;
    let mut by_corrid = None;
    for (name, value) in parse(query, DEQUEUE)? {
        let v = value.as_str();
        match name.as_str() {
            "wait" => ctl.wait_ms = Some(number("wait", v, 0..=WAIT_MAX)? * 1000),
            "msgid" => by_msgid = Some(MsgId::parse(v)?),
            "corrid" => by_corrid = Some(parse_corrid(v)?),
            _ => {
                ctl.peek = match v {
                    "1" | "true" | "yes" | "" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(QmError::invalid("peek", v, "give 1 or 0")),
                }
            }
        }
    }
    ctl.select = match (by_msgid, by_corrid) {
        (Some(_), Some(_)) => {
            return Err(QmError::inval(
                "msgid and corrid cannot be combined: a dequeue selects by one of them",
            ));
        }
        (Some(id), None) => Select::Msgid(id),
        (None, Some(c)) => Select::Corrid(c),
        (None, None) => Select::First,
    };
    ctl.validate()?;
    Ok(ctl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qm_common::message::{Expiry, TimeSpec};

    #[test]
    fn enqueue_parameters() {
        let q = "priority=7&corrid=job%2042&reply_queue=R&delivery=nonpersistent&available=+60&expiration=none";
        let ctl = enqueue_ctl(Some(q)).unwrap();
        assert_eq!(ctl.priority, Some(7));
        assert_eq!(ctl.corrid, b"job 42");
        assert_eq!(ctl.reply_queue.as_deref(), Some("R"));
        assert_eq!(ctl.delivery, Some(Qos::NonPersistent));
        assert_eq!(ctl.available, Some(TimeSpec::Relative(60)));
        assert_eq!(ctl.expiration, Some(Expiry::Never));
        let e = enqueue_ctl(Some("priority=0")).unwrap_err().message;
        assert!(e.contains("priority") && e.contains("1 to 100"), "{e}");
        let e = enqueue_ctl(Some("prio=1")).unwrap_err().message;
        assert!(e.contains("prio") && e.contains("priority, corrid"), "{e}");
        assert!(enqueue_ctl(Some("priority=1&priority=2")).unwrap_err().message.contains("twice"));
        assert!(enqueue_ctl(Some("corrid=%ff")).is_err());
    }

    #[test]
    fn dequeue_parameters() {
        let ctl = dequeue_ctl(Some("wait=5&peek=1&corrid=c")).unwrap();
        assert_eq!(ctl.wait_ms, Some(5000));
        assert!(ctl.peek);
        assert_eq!(ctl.select, Select::Corrid(b"c".to_vec()));
        assert!(dequeue_ctl(Some("msgid=a&corrid=b")).is_err());
        assert!(dequeue_ctl(Some("wait=86401")).unwrap_err().message.contains("wait"));
        assert_eq!(dequeue_ctl(None).unwrap(), DequeueCtl::default());
    }
}
