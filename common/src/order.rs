//! Queue order and out-of-order enqueuing, as `qcreate` accepts them.
//!
//! A queue order is a comma list of sort keys, most significant first: `priority`, `time`
//! (availability time) and `expiration`, then at most one of `fifo` / `lifo` as the final
//! tie-break (fifo when neither is given). Out-of-order enqueuing is `none`, `top`, `msgid`
//! or both of the last two.

use crate::error::{QmError, QmResult};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A sort key of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// Higher priority first (1..100).
    Priority,
    /// Earlier availability time first.
    Time,
    /// Earlier expiration first; messages that never expire come last.
    Expiration,
}

/// The final tie-break among messages equal on every sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tiebreak {
    Fifo,
    Lifo,
}

/// The order in which a queue hands out its messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueOrder {
    pub keys: Vec<SortKey>,
    pub tiebreak: Tiebreak,
}

impl Default for QueueOrder {
    fn default() -> Self {
        QueueOrder { keys: Vec::new(), tiebreak: Tiebreak::Fifo }
    }
}

const ORDER_ALLOWED: &str =
    "use a comma list of priority, time, expiration, with fifo or lifo only as the last element";

impl FromStr for QueueOrder {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        let field = "Queue order";
        let words: Vec<&str> = s.split(',').map(str::trim).collect();
        if s.trim().is_empty() {
            return Err(QmError::inval(format!("{field} must be specified; {ORDER_ALLOWED}")));
        }
        let mut order = QueueOrder::default();
        let mut tiebreak_seen = false;
        for (i, word) in words.iter().enumerate() {
            let word = word.to_ascii_lowercase();
            let key = match word.as_str() {
                "priority" | "prio" => Some(SortKey::Priority),
                "time" => Some(SortKey::Time),
                "expiration" | "expir" => Some(SortKey::Expiration),
                "fifo" | "lifo" => None,
                _ => return Err(QmError::invalid(field, s, ORDER_ALLOWED)),
            };
            match key {
                Some(key) if order.keys.contains(&key) => {
                    return Err(QmError::invalid(field, s, "each sort key may appear only once"));
                }
                Some(key) => order.keys.push(key),
                None => {
                    let other_tiebreak = words[i + 1..]
                        .iter()
                        .any(|w| matches!(w.to_ascii_lowercase().as_str(), "fifo" | "lifo"));
                    if tiebreak_seen || other_tiebreak {
                        return Err(QmError::invalid(
                            field,
                            s,
                            "fifo and lifo are mutually exclusive and may appear once",
                        ));
                    }
                    if i + 1 != words.len() {
                        return Err(QmError::invalid(
                            field,
                            s,
                            "fifo or lifo must be the last element",
                        ));
                    }
                    tiebreak_seen = true;
                    order.tiebreak = if word == "fifo" { Tiebreak::Fifo } else { Tiebreak::Lifo };
                }
            }
        }
        Ok(order)
    }
}

impl fmt::Display for QueueOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in &self.keys {
            let word = match key {
                SortKey::Priority => "priority",
                SortKey::Time => "time",
                SortKey::Expiration => "expiration",
            };
            write!(f, "{word},")?;
        }
        f.write_str(match self.tiebreak {
            Tiebreak::Fifo => "fifo",
            Tiebreak::Lifo => "lifo",
        })
    }
}

/// Which out-of-order placements a queue allows at enqueue time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutOfOrder {
    /// `TPQTOP`: put a message at the top of the queue.
    pub top: bool,
    /// `TPQBEFOREMSGID`: put a message before a given one.
    pub msgid: bool,
}

const OOO_ALLOWED: &str = "use none, top, msgid or top,msgid";

impl FromStr for OutOfOrder {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        let field = "Out-of-ordering enqueuing";
        let mut ooo = OutOfOrder::default();
        let mut none = false;
        for word in s.split(',').map(|w| w.trim().to_ascii_lowercase()) {
            let seen = match word.as_str() {
                "none" => std::mem::replace(&mut none, true),
                "top" => std::mem::replace(&mut ooo.top, true),
                "msgid" => std::mem::replace(&mut ooo.msgid, true),
                _ => return Err(QmError::invalid(field, s, OOO_ALLOWED)),
            };
            if seen {
                return Err(QmError::invalid(field, s, "a value may appear only once"));
            }
        }
        if none && (ooo.top || ooo.msgid) {
            return Err(QmError::invalid(field, s, "none cannot be combined with top or msgid"));
        }
        Ok(ooo)
    }
}

impl fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.top, self.msgid) {
            (false, false) => "none",
            (true, false) => "top",
            (false, true) => "msgid",
            (true, true) => "top,msgid",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        let o: QueueOrder = "priority,time,lifo".parse().unwrap();
        assert_eq!(o.keys, vec![SortKey::Priority, SortKey::Time]);
        assert_eq!(o.tiebreak, Tiebreak::Lifo);
        assert_eq!(o.to_string(), "priority,time,lifo");
        assert_eq!("fifo".parse::<QueueOrder>().unwrap().to_string(), "fifo");
        assert_eq!("priority".parse::<QueueOrder>().unwrap().to_string(), "priority,fifo");
        assert!("fifo,priority".parse::<QueueOrder>().is_err());
        assert!(
            "fifo,lifo".parse::<QueueOrder>().unwrap_err().message.contains("mutually exclusive")
        );
        assert!("priority,priority".parse::<QueueOrder>().is_err());
        assert!("random".parse::<QueueOrder>().unwrap_err().message.contains("priority, time"));
        assert!("".parse::<QueueOrder>().is_err());
    }

    #[test]
    fn out_of_order() {
        assert_eq!("none".parse::<OutOfOrder>().unwrap(), OutOfOrder::default());
        let both: OutOfOrder = "msgid,top".parse().unwrap();
        assert!(both.top && both.msgid);
        assert_eq!(both.to_string(), "top,msgid");
        assert!("none,top".parse::<OutOfOrder>().is_err());
        assert!("top,top".parse::<OutOfOrder>().is_err());
        assert!("bottom".parse::<OutOfOrder>().is_err());
    }
}
