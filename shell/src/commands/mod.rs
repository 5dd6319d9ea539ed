//! The commands, one module per family, and the value parsers they share.

pub mod automation;
pub mod device;
pub mod export;
pub mod general;
pub mod managers;
pub mod message;
pub mod msgadmin;
pub mod qspace;
pub mod queue;
pub mod rights;
pub mod stat;
pub mod why;

use qm_common::{QmError, QmResult};
use std::str::FromStr;

/// A whole number for `field`, within `range`.
pub fn number<T>(field: &str, text: &str, range: std::ops::RangeInclusive<T>) -> QmResult<T>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let allowed = format!("it must be a whole number from {} to {}", range.start(), range.end());
    let value: T = text.trim().parse().map_err(|_| QmError::invalid(field, text, &allowed))?;
    if !range.contains(&value) {
        return Err(QmError::invalid(field, text, &allowed));
    }
    Ok(value)
}

/// A y/n answer, read as Tuxedo reads it: `y` (or `yes`) means yes and anything else no;
/// an answer that is neither y nor n is warned about, so a typo does not pass unseen.
pub fn yes_no(field: &str, text: &str) -> QmResult<bool> {
    match text.trim() {
        "y" | "Y" | "yes" => Ok(true),
        "n" | "N" | "no" => Ok(false),
        other => {
            let other = qm_common::error::shown(other);
            eprintln!("WARN: {field}: '{other}' is taken as n (only y answers yes)");
            Ok(false)
        }
    }
}

/// An on/off argument of echo, verbose and paginate.
pub fn on_off(text: &str) -> QmResult<bool> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(QmError::invalid("Mode", text, "use on or off")),
    }
}
