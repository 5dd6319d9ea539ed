//! A message as it is stored, and the key that orders it in its queue.
//!
//! The order key is computed once from the queue's order and stored with the message, so a
//! restart rebuilds exactly the same order, out-of-order placements included.

use crate::storage::bodies::BodyRef;
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

/// A stored message is one value: a 4-byte little-endian word, two checksums, the postcard
/// record, then the body. The word is the record's length; its top bit says that the
/// body's first bytes are stored apart, as parts (see [`body_layout`]), and only its last
/// bytes follow the record; its next bit says that the checksums are there (messages
/// stored before them have neither); its third bit says that the body is in the file's
/// body segments ([`crate::storage::bodies`]) and a [`BodyRef`] to it follows the record. The checksums are CRC-32s of the record and of the
/// whole body, so that `qverify` finds a changed byte anywhere in a message. A message
/// that fits in one of redb's pages is one value, which keeps its enqueue and dequeue to a
/// single B-tree update.
pub fn stored_len(meta: &[u8], tail_len: usize) -> usize {
    HEAD + meta.len() + tail_len
}

/// The word's flag for a body stored partly apart.
const PARTED: u32 = 1 << 31;
/// The word's flag for the checksums that follow it.
const SUMMED: u32 = 1 << 30;
/// The word's flag for a body kept in the file's body segments.
const LOGGED: u32 = 1 << 29;
/// The bytes before the record: the word and the two checksums.
const HEAD: usize = 12;

/// The checksum of a message's body (or its record), as stored.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Writes a stored message into `out`, which is exactly [`stored_len`] bytes; `tail` is
/// the whole body, or (`parted`) its last bytes; `body_sum` the [`checksum`] of the whole
/// body.
pub fn write_stored(out: &mut [u8], meta: &[u8], tail: &[u8], parted: bool, body_sum: u32) {
    let word = meta.len() as u32 | SUMMED | if parted { PARTED } else { 0 };
    out[..4].copy_from_slice(&word.to_le_bytes());
    out[4..8].copy_from_slice(&checksum(meta).to_le_bytes());
    out[8..12].copy_from_slice(&body_sum.to_le_bytes());
    out[HEAD..HEAD + meta.len()].copy_from_slice(meta);
    out[HEAD + meta.len()..].copy_from_slice(tail);
}

/// Writes a stored message whose body is in a body segment at `at` into `out`, which is
/// exactly [`stored_len`]`(meta, BodyRef::BYTES)` bytes.
pub fn write_logged(out: &mut [u8], meta: &[u8], at: &BodyRef, body_sum: u32) {
    write_stored(out, meta, &at.to_bytes(), false, body_sum);
    let word = u32::from_le_bytes(out[..4].try_into().expect("four bytes")) | LOGGED;
    out[..4].copy_from_slice(&word.to_le_bytes());
}

/// The checksums stored with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    pub meta: u32,
    pub body: u32,
}

/// A stored message, split: its record bytes, the body bytes stored with it, whether the
/// body's first bytes are stored apart, its checksums (none in a message stored before
/// them), and where its body is when it is in a body segment (then `tail` is empty).
#[derive(Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    pub meta: &'a [u8],
    pub tail: &'a [u8],
    pub parted: bool,
    pub sums: Option<Sums>,
    pub logged: Option<BodyRef>,
}

/// Splits a stored message.
pub fn split_stored(value: &[u8]) -> Option<Stored<'_>> {
    let word = u32::from_le_bytes(value.get(..4)?.try_into().ok()?);
    let len = (word & !(PARTED | SUMMED | LOGGED)) as usize;
    let (sums, head) = match word & SUMMED != 0 {
        true => {
            let meta = u32::from_le_bytes(value.get(4..8)?.try_into().ok()?);
            let body = u32::from_le_bytes(value.get(8..12)?.try_into().ok()?);
            (Some(Sums { meta, body }), HEAD)
        }
        false => (None, 4),
    };
    let meta = value.get(head..head + len)?;
    let tail = &value[head + len..];
    if word & LOGGED != 0 {
        let at = BodyRef::from_bytes(tail)?;
        return Some(Stored { meta, tail: &[], parted: false, sums, logged: Some(at) });
    }
    Some(Stored { meta, tail, parted: word & PARTED != 0, sums, logged: None })
}

/// redb's page: it gives a value that does not share a leaf a power-of-two run of them.
const REDB_PAGE: usize = 4096;
/// What redb adds to a value alone in its leaf (the leaf's header, the value's length and
/// its key), with room to spare.
const PART_OVERHEAD: usize = 64;

/// How a body of `len` bytes is stored beside a record of `meta_len` bytes: the lengths of
/// the parts its first bytes are cut into, in order, and how many last bytes stay with the
/// record. Each part but the last fills a power-of-two run of redb's pages exactly, so a
/// large body takes about its own size on disk, where one value would take the next power
/// of two (up to twice). A message that fits in a page is not cut.
pub fn body_layout(len: usize, meta_len: usize) -> (Vec<usize>, usize) {
    let mut parts = Vec::new();
    let mut rest = len;
    while HEAD + meta_len + rest > REDB_PAGE - PART_OVERHEAD {
        let mut run = REDB_PAGE;
        while 2 * run - PART_OVERHEAD <= rest {
            run *= 2;
        }
        let part = (run - PART_OVERHEAD).min(rest);
        parts.push(part);
        rest -= part;
    }
    (parts, rest)
}

/// The disk a message stored whole (`whole`: its body given) or only its record (the body
/// stays where it is) may take: its parts fill their runs of pages exactly; the record and
/// what stays with it are counted twice, for a leaf that is only half full.
pub fn stored_room(meta_len: usize, body_len: usize, whole: bool) -> u64 {
    let (parts, tail) = body_layout(body_len, meta_len);
    let record = 2 * (HEAD + meta_len + tail + PART_OVERHEAD) as u64;
    if !whole {
        return record;
    }
    let runs: usize = parts.iter().map(|p| (p + PART_OVERHEAD).next_power_of_two()).sum();
    runs as u64 + record
}

/// The identifier of the message stored under `seq`: 16 hex digits. Written out by hand:
/// every enqueue and dequeue makes one, and `format!` pads one character at a time.
pub fn msgid_of(seq: u64) -> MsgId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (0..16).rev().map(|i| DIGITS[((seq >> (4 * i)) & 0xf) as usize]).collect();
    MsgId(digits)
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

/// A persistent message of queue "q" for tests, of `priority`, with `time` for each of its
/// times.
#[cfg(test)]
pub(crate) fn test_meta(priority: u8, time: u64) -> MessageMeta {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(priority: u8, time: u64) -> MessageMeta {
        test_meta(priority, time)
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
        write_stored(&mut buf, b"meta", b"hello", false, checksum(b"hello"));
        let sums = Some(Sums { meta: checksum(b"meta"), body: checksum(b"hello") });
        let whole = Stored { meta: b"meta", tail: b"hello", parted: false, sums, logged: None };
        assert_eq!(split_stored(&buf), Some(whole));
        write_stored(&mut buf, b"meta", b"hello", true, 7);
        assert!(split_stored(&buf).is_some_and(|s| s.parted && s.tail == b"hello"));
        assert_eq!(split_stored(&[1, 0]), None);
        assert_eq!(split_stored(&[9, 0, 0, 0, 1]), None);
        assert_eq!(split_stored(&[1, 0, 0, 0x40, 1]), None, "checksums cut short");
        // A message stored before the checksums: the word, the record, the body.
        let old = [4, 0, 0, 0, b'm', b'e', b't', b'a', b'h', b'i'];
        let before = Stored { meta: b"meta", tail: b"hi", parted: false, sums: None, logged: None };
        assert_eq!(split_stored(&old), Some(before));
    }

    #[test]
    fn a_logged_body_is_stored_as_a_reference() {
        let at = BodyRef { segment: 3, offset: 4096, len: 5, crc: checksum(b"hello") };
        let mut buf = vec![0; stored_len(b"meta", BodyRef::BYTES)];
        write_logged(&mut buf, b"meta", &at, checksum(b"hello"));
        let sums = Some(Sums { meta: checksum(b"meta"), body: checksum(b"hello") });
        let logged = Stored { meta: b"meta", tail: b"", parted: false, sums, logged: Some(at) };
        assert_eq!(split_stored(&buf), Some(logged));
        assert_eq!(split_stored(&buf[..buf.len() - 1]), None, "a reference cut short");
    }

    #[test]
    fn bodies_are_cut_to_fill_runs_of_pages() {
        assert_eq!(body_layout(1000, 70), (vec![], 1000), "a page's worth is not cut");
        assert_eq!(body_layout(5000, 70), (vec![4032], 968));
        assert_eq!(body_layout(17_280, 70), (vec![16_320], 960));
        let (parts, tail) = body_layout(4 << 20, 70);
        assert_eq!((parts, tail), (vec![(4 << 20) - 64], 64), "the largest body: one run");
        for len in [0, 1, 4000, 4096, 70_000, 1_000_003, 4 << 20] {
            let (parts, tail) = body_layout(len, 70);
            assert_eq!(parts.iter().sum::<usize>() + tail, len, "{len}: nothing lost");
            assert!(HEAD + 70 + tail <= REDB_PAGE, "{len}: the record and tail share a page");
            for part in parts {
                let run = (part + PART_OVERHEAD).next_power_of_two();
                assert!(run - PART_OVERHEAD - part < REDB_PAGE, "{len}: a part fills its run");
            }
        }
    }

    #[test]
    fn msgids() {
        assert_eq!(msgid_of(255).to_string(), "00000000000000ff");
        assert_eq!(msgid_of(0x0123_4567_89ab_cdef).to_string(), "0123456789abcdef");
        assert_eq!(msgid_of(u64::MAX).to_string(), "ffffffffffffffff");
        assert_eq!(seq_of(&msgid_of(12345)), Some(12345));
        assert_eq!(seq_of(&MsgId(b"nope".to_vec())), None);
        assert_eq!(seq_of(&MsgId(b"00000000000000FF".to_vec())), None);
        assert_eq!(seq_of(&MsgId(b"+0000000000000ff".to_vec())), None);
    }
}
