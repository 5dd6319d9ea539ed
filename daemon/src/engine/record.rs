//! A message as it is stored, and the key that orders it in its queue.
//!
//! The order key is computed once from the queue's order and stored with the message, so a
//! restart rebuilds exactly the same order, out-of-order placements included.

use qm_common::message::{MsgId, Qos};
use qm_common::order::{QueueOrder, SortKey, Tiebreak};
use serde::{Deserialize, Serialize};

/// Where a message sorts in its queue: lower keys are dequeued first.
///
/// `top` is 0 for ordinary messages and negative for `TPQTOP` ones (newest first); `parts`
/// are the queue's sort keys; `tie` is the fifo/lifo tie-break; `sub` places a
/// `TPQBEFOREMSGID` message before its target (it copies the target's key with a lower
/// `sub`); `seq` makes every key unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    pub top: i64,
    pub parts: [i64; 3],
    pub tie: i64,
    pub sub: i64,
    pub seq: u64,
}

/// Everything about a message but its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub queue: String,
    #[serde(with = "serde_bytes")]
    pub corrid: Vec<u8>,
    pub priority: u8,
    pub enqueued_us: u64,
    /// When it may be dequeued (scheduled time or end of a retry delay).
    pub available_us: u64,
    /// The time it sorts by under `time` order: its requested availability.
    pub order_time_us: u64,
    pub expires_us: Option<u64>,
    pub retries: u32,
    pub persistent: bool,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub reply_qos: Option<Qos>,
    pub urcode: i64,
    pub body_len: u64,
    pub origin_queue: Option<String>,
    pub key: OrderKey,
}

/// A stored message is one value: the record's length (4 bytes, little-endian), the
/// postcard record, then the body. One value per message keeps each enqueue and dequeue
/// to a single B-tree update.
pub fn stored_len(meta: &[u8], body_len: usize) -> usize {
    4 + meta.len() + body_len
}

/// Writes a stored message into `out`, which is exactly [`stored_len`] bytes.
pub fn write_stored(out: &mut [u8], meta: &[u8], body: &[u8]) {
    out[..4].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    out[4..4 + meta.len()].copy_from_slice(meta);
    out[4 + meta.len()..].copy_from_slice(body);
}

/// Splits a stored message into its record bytes and its body.
pub fn split_stored(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let meta = value.get(4..4 + len)?;
    Some((meta, &value[4 + len..]))
}

/// The identifier of the message stored under `seq`: 16 hex digits.
pub fn msgid_of(seq: u64) -> MsgId {
    MsgId(format!("{seq:016x}").into_bytes())
}

/// The sequence number behind an identifier qm generated, if it is one. Only the spelling
/// [`msgid_of`] gives counts: `...00FF` or `+...0ff` is another identifier, not message 255.
pub fn seq_of(msgid: &MsgId) -> Option<u64> {
    let digits = msgid.0.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let text = std::str::from_utf8(&msgid.0).ok().filter(|t| digits && t.len() == 16)?;
    u64::from_str_radix(text, 16).ok()
}

/// The ordinary order key of a message (no top or before placement).
pub fn order_key(order: &QueueOrder, meta: &MessageMeta, seq: u64) -> OrderKey {
    let mut parts = [0i64; 3];
    for (slot, key) in parts.iter_mut().zip(&order.keys) {
        *slot = match key {
            SortKey::Priority => -i64::from(meta.priority),
            SortKey::Time => meta.order_time_us as i64,
            SortKey::Expiration => meta.expires_us.map_or(i64::MAX, |e| e as i64),
        };
    }
    let tie = match order.tiebreak {
        Tiebreak::Fifo => seq as i64,
        Tiebreak::Lifo => -(seq as i64),
    };
    OrderKey { top: 0, parts, tie, sub: 0, seq }
}

/// Seconds since the epoch of a microsecond time.
pub fn secs(us: u64) -> u64 {
    us / 1_000_000
}

/// Microseconds since the epoch now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(priority: u8, time: u64) -> MessageMeta {
        MessageMeta {
            queue: "q".into(),
            corrid: vec![],
            priority,
            enqueued_us: time,
            available_us: time,
            order_time_us: time,
            expires_us: None,
            retries: 0,
            persistent: true,
            reply_queue: None,
            failure_queue: None,
            reply_qos: None,
            urcode: 0,
            body_len: 0,
            origin_queue: None,
            key: OrderKey { top: 0, parts: [0; 3], tie: 0, sub: 0, seq: 0 },
        }
    }

    #[test]
    fn priority_then_fifo() {
        let order: QueueOrder = "priority,fifo".parse().unwrap();
        let a = order_key(&order, &meta(10, 5), 1);
        let b = order_key(&order, &meta(90, 9), 2);
        let c = order_key(&order, &meta(90, 1), 3);
        assert!(b < c && c < a, "higher priority first, then first in");
        let lifo: QueueOrder = "lifo".parse().unwrap();
        assert!(order_key(&lifo, &meta(1, 1), 2) < order_key(&lifo, &meta(1, 1), 1));
    }

    #[test]
    fn stored_round_trip() {
        let mut buf = vec![0; stored_len(b"meta", 5)];
        write_stored(&mut buf, b"meta", b"hello");
        assert_eq!(split_stored(&buf), Some((&b"meta"[..], &b"hello"[..])));
        assert_eq!(split_stored(&[1, 0]), None);
        assert_eq!(split_stored(&[9, 0, 0, 0, 1]), None);
    }

    #[test]
    fn msgids() {
        assert_eq!(msgid_of(255).to_string(), "00000000000000ff");
        assert_eq!(seq_of(&msgid_of(12345)), Some(12345));
        assert_eq!(seq_of(&MsgId(b"nope".to_vec())), None);
        assert_eq!(seq_of(&MsgId(b"00000000000000FF".to_vec())), None);
        assert_eq!(seq_of(&MsgId(b"+0000000000000ff".to_vec())), None);
    }
}
