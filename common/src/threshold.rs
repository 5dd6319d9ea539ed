//! Queue capacity limits: the high and low marks and the command run at a crossing.
//!
//! A limit is a number with a unit: `b` bytes, `B` blocks, `%` of the queue space, `m`
//! messages (persistent limits only). The low mark takes the high mark's unit when written
//! without one and must use the same unit otherwise.

use crate::error::{QmError, QmResult};
use crate::names::check_command;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitUnit {
    /// `b`: bytes used by the queue's messages.
    Bytes,
    /// `B`: blocks (pages) used by the queue's messages.
    Blocks,
    /// `%`: percent of the queue space's pages (or of its non-persistent memory).
    Percent,
    /// `m`: number of messages, persistent and non-persistent.
    Messages,
}

impl LimitUnit {
    pub fn suffix(self) -> char {
        match self {
            LimitUnit::Bytes => 'b',
            LimitUnit::Blocks => 'B',
            LimitUnit::Percent => '%',
            LimitUnit::Messages => 'm',
        }
    }

    fn from_suffix(c: char) -> Option<Self> {
        match c {
            'b' => Some(LimitUnit::Bytes),
            'B' => Some(LimitUnit::Blocks),
            '%' => Some(LimitUnit::Percent),
            'm' => Some(LimitUnit::Messages),
            _ => None,
        }
    }
}

/// Which set of limits: the persistent one (positional) or the non-persistent one (`-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSet {
    Persistent,
    NonPersistent,
}

impl LimitSet {
    fn allowed_units(self) -> &'static str {
        match self {
            LimitSet::Persistent => "b (bytes), B (blocks), % (percent) or m (messages)",
            LimitSet::NonPersistent => "b (bytes), B (blocks) or % (percent)",
        }
    }

    /// The units as a short list, for "a whole number ... followed by ...".
    fn unit_list(self) -> &'static str {
        match self {
            LimitSet::Persistent => "b, B, % or m",
            LimitSet::NonPersistent => "b, B or %",
        }
    }

    fn high_field(self) -> &'static str {
        match self {
            LimitSet::Persistent => "High limit",
            LimitSet::NonPersistent => "Non-persistent (-n) high limit",
        }
    }

    fn low_field(self) -> &'static str {
        match self {
            LimitSet::Persistent => "Reset (low) limit",
            LimitSet::NonPersistent => "Non-persistent (-n) reset (low) limit",
        }
    }

    fn allows(self, unit: LimitUnit) -> bool {
        self == LimitSet::Persistent || unit != LimitUnit::Messages
    }
}

/// A capacity mark such as `80%` or `100m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    pub value: u64,
    pub unit: LimitUnit,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, self.unit.suffix())
    }
}

/// High and low marks with the command to run when usage reaches the high mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Threshold {
    pub high: Limit,
    pub low: Limit,
    /// Empty when no command is defined.
    pub command: String,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            high: Limit { value: 100, unit: LimitUnit::Percent },
            low: Limit { value: 0, unit: LimitUnit::Percent },
            command: String::new(),
        }
    }
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn parse_number(field: &str, s: &str, digits: &str, units: &str) -> QmResult<u64> {
    digits.parse::<u64>().map_err(|_| {
        QmError::invalid(
            field,
            s,
            &format!("it must be a whole number from 0 to {} followed by {units}", u64::MAX),
        )
    })
}

/// Parses a high mark; the unit is required.
pub fn parse_high(s: &str, set: LimitSet) -> QmResult<Limit> {
    let field = set.high_field();
    let s = s.trim();
    let (digits, rest) = split_number(s);
    let value = parse_number(field, s, digits, set.unit_list())?;
    let unit = rest
        .chars()
        .next()
        .filter(|_| rest.chars().count() == 1)
        .and_then(LimitUnit::from_suffix)
        .filter(|u| set.allows(*u))
        .ok_or_else(|| {
            QmError::invalid(field, s, &format!("the unit must be one of {}", set.allowed_units()))
        })?;
    let limit = Limit { value, unit };
    check_high(limit, set)?;
    Ok(limit)
}

fn check_high(limit: Limit, set: LimitSet) -> QmResult<()> {
    if limit.value == 0 {
        return Err(QmError::invalid(set.high_field(), limit, "it must be greater than 0"));
    }
    if limit.unit == LimitUnit::Percent && limit.value > 100 {
        return Err(QmError::invalid(set.high_field(), limit, "a percentage must be 1 to 100"));
    }
    Ok(())
}

/// Parses a low mark; without a unit it takes the high mark's unit.
pub fn parse_low(s: &str, high: Limit) -> QmResult<Limit> {
    parse_low_of(s, high, LimitSet::Persistent)
}

/// Parses a low mark of `set`; without a unit it takes the high mark's unit.
pub fn parse_low_of(s: &str, high: Limit, set: LimitSet) -> QmResult<Limit> {
    let field = set.low_field();
    let s = s.trim();
    let (digits, rest) = split_number(s);
    let units = format!("{} (or no unit)", set.unit_list());
    let value = parse_number(field, s, digits, &units)?;
    let unit = if rest.is_empty() {
        high.unit
    } else {
        let unit = rest
            .chars()
            .next()
            .filter(|_| rest.chars().count() == 1)
            .and_then(LimitUnit::from_suffix)
            .ok_or_else(|| {
                QmError::invalid(
                    field,
                    s,
                    &format!("the unit must be {} or left out", set.unit_list()),
                )
            })?;
        if unit != high.unit {
            return Err(QmError::invalid(
                field,
                s,
                &format!("the unit must match the high limit's unit ({})", high.unit.suffix()),
            ));
        }
        unit
    };
    Ok(Limit { value, unit })
}

impl Threshold {
    /// Checks the marks together: same unit, low below high.
    pub fn validate(&self, set: LimitSet) -> QmResult<()> {
        if !set.allows(self.high.unit) {
            return Err(QmError::invalid(
                set.high_field(),
                self.high,
                &format!("the unit must be one of {}", set.allowed_units()),
            ));
        }
        check_high(self.high, set)?;
        if self.low.unit != self.high.unit {
            return Err(QmError::invalid(
                set.low_field(),
                self.low,
                &format!("the unit must match the high limit's unit ({})", self.high.unit.suffix()),
            ));
        }
        if self.low.value >= self.high.value {
            return Err(QmError::invalid(
                set.low_field(),
                self.low,
                &format!("it must be less than the high limit ({})", self.high),
            ));
        }
        check_command("Queue capacity command", &self.command)
    }

    /// Parses the `-n nhigh,nlow,ncmd` option of `qcreate`/`qchange`.
    pub fn parse_nonpersistent(s: &str) -> QmResult<Threshold> {
        let mut parts = s.splitn(3, ',');
        let (Some(high), Some(low), Some(command)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(QmError::invalid(
                "-n",
                s,
                "write nhigh,nlow,ncmd (the command may be empty, the commas are required)",
            ));
        };
        let high = parse_high(high, LimitSet::NonPersistent)?;
        let low = parse_low_of(low, high, LimitSet::NonPersistent)?;
        let threshold = Threshold { high, low, command: command.trim().to_string() };
        threshold.validate(LimitSet::NonPersistent)?;
        Ok(threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_and_low() {
        let high = parse_high("80%", LimitSet::Persistent).unwrap();
        assert_eq!(high, Limit { value: 80, unit: LimitUnit::Percent });
        assert_eq!(parse_low("10", high).unwrap().to_string(), "10%");
        assert_eq!(parse_low("10%", high).unwrap().to_string(), "10%");
        assert!(parse_low("10m", high).unwrap_err().message.contains("match"));
        assert!(parse_high("80", LimitSet::Persistent).unwrap_err().message.contains("unit"));
        assert!(parse_high("101%", LimitSet::Persistent).is_err());
        assert!(parse_high("0m", LimitSet::Persistent).is_err());
        assert!(parse_high("5m", LimitSet::NonPersistent).is_err());
        assert_eq!(parse_high("100B", LimitSet::NonPersistent).unwrap().to_string(), "100B");
    }

    #[test]
    fn low_must_be_below_high() {
        let t = Threshold {
            high: Limit { value: 10, unit: LimitUnit::Messages },
            low: Limit { value: 10, unit: LimitUnit::Messages },
            command: String::new(),
        };
        assert!(t.validate(LimitSet::Persistent).is_err());
        assert!(Threshold::default().validate(LimitSet::Persistent).is_ok());
    }

    #[test]
    fn nonpersistent_option() {
        let t = Threshold::parse_nonpersistent("80%,10%,echo full, really").unwrap();
        assert_eq!(t.command, "echo full, really");
        assert!(Threshold::parse_nonpersistent("80%,10%").is_err());
        assert_eq!(Threshold::parse_nonpersistent("100b,0,").unwrap().low.to_string(), "0b");
        let e = Threshold::parse_nonpersistent("10m,0m,x").unwrap_err().message;
        assert!(e.starts_with("Non-persistent (-n) high limit: '10m'"), "{e}");
        let e = Threshold::parse_nonpersistent("10b,x,").unwrap_err().message;
        assert!(e.starts_with("Non-persistent (-n) reset (low) limit: 'x'"), "{e}");
        assert!(e.contains("a whole number from 0 to 18446744073709551615"), "{e}");
        let e = parse_high("-5m", LimitSet::Persistent).unwrap_err().message;
        assert!(
            e.contains("a whole number from 0 to 18446744073709551615 followed by b, B, % or m"),
            "{e}"
        );
        let e = parse_high("99999999999999999999999m", LimitSet::Persistent).unwrap_err().message;
        assert!(e.contains("from 0 to 18446744073709551615"), "{e}");
    }
}
