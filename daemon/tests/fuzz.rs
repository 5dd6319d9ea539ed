//! Fuzzing of what qmd reads back from its own files: the stored records, a stored message's
//! layout, and loading a queue space from tables holding arbitrary values (a damaged or
//! tampered device file must be refused with a message, never crash the daemon).
//!
//! `QM_FUZZ_SECS` makes these run longer (see `fuzz_support`).

#[path = "../../common/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::check;
use proptest::prelude::*;
use proptest::sample::Index;
use qm_common::device::{UdlEntry, VtocEntry};
use qm_common::message::{MsgId, Qos};
use qm_common::protocol::FiringRecord;
use qm_common::queue::QueueDef;
use qm_daemon::engine::record::{
    MessageMeta, OrderKey, checksum, msgid_of, seq_of, split_stored, stored_len, write_stored,
};
use qm_daemon::engine::txn::recover;
use qm_daemon::storage::files;
use qm_daemon::storage::handle::DbFile;
use qm_daemon::storage::records::{DeviceHeader, FileHeader, QueueSpaceRecord, decode, encode};
use qm_daemon::storage::tables::QueueSpaceTables;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

const CASES: u32 = 256;

/// Decodes `bytes` as a stored `what`: what decodes encodes back to an equal value; what
/// does not is refused naming the record.
fn decodes<T>(what: &str, bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match decode::<T>(what, bytes) {
        Ok(value) => {
            let again = decode::<T>(what, &encode(&value)).ok();
            prop_assert_eq!(again.as_ref(), Some(&value));
        }
        Err(e) => {
            let named = format!("stored {what} record cannot be read: ");
            prop_assert!(e.message.starts_with(&named) && e.message.len() > named.len(), "{}", e);
        }
    }
    Ok(())
}

fn meta() -> impl Strategy<Value = MessageMeta> {
    let queue = prop::sample::select(vec!["q1", "q2", "gone", ""]).prop_map(String::from);
    let qos = prop::option::of(prop_oneof![
        Just(Qos::Default),
        Just(Qos::Persistent),
        Just(Qos::NonPersistent)
    ]);
    let text = prop::option::of("[a-z]{0,4}");
    let edge = prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1)];
    let key = (edge.clone(), any::<[i64; 3]>(), any::<i64>(), edge, any::<u64>());
    (
        (queue, prop::collection::vec(any::<u8>(), 0..8), any::<u8>(), any::<(u64, u64, u64)>()),
        (any::<Option<u64>>(), any::<u32>(), any::<bool>(), text.clone(), text.clone(), qos),
        (any::<i64>(), prop_oneof![any::<u64>(), (u64::MAX - 256)..=u64::MAX], text, key),
    )
        .prop_map(
            |(
                (queue, corrid, priority, (enqueued_us, available_us, order_time_us)),
                (expires_us, retries, persistent, reply_queue, failure_queue, reply_qos),
                (urcode, body_len, origin_queue, (top, parts, tie, sub, seq)),
            )| MessageMeta {
                queue,
                corrid,
                priority,
                enqueued_us,
                available_us,
                order_time_us,
                expires_us,
                retries,
                persistent,
                reply_queue,
                failure_queue,
                reply_qos,
                urcode,
                body_len,
                origin_queue,
                key: OrderKey { top, parts, tie, sub, seq },
            },
        )
}

/// A stored value: a well-made message, one with a few bytes changed, or any bytes.
fn stored_value() -> BoxedStrategy<Vec<u8>> {
    // Mostly the body length qm would record; sometimes whatever the record claims.
    let honest = prop::bool::weighted(0.6);
    let made = (meta(), prop::collection::vec(any::<u8>(), 0..16), honest)
        .prop_map(|(mut m, body, honest)| {
            if honest {
                m.body_len = body.len() as u64;
            }
            let record = encode(&m);
            let mut out = vec![0; stored_len(&record, body.len())];
            write_stored(&mut out, &record, &body, false, checksum(&body));
            out
        })
        .boxed();
    let edits = prop::collection::vec((any::<Index>(), any::<u8>()), 1..3);
    prop_oneof![
        3 => made.clone(),
        2 => (made, edits).prop_map(|(mut v, edits)| {
            for (at, byte) in edits {
                let i = at.index(v.len());
                v[i] = byte;
            }
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

/// Every record kind qmd stores, decoded from arbitrary bytes.
#[test]
fn fuzz_stored_records_decode() {
    let bytes = prop_oneof![stored_value(), prop::collection::vec(any::<u8>(), 0..64)];
    check(CASES * 2, bytes, |bytes| {
        decodes::<DeviceHeader>("header", &bytes)?;
        decodes::<FileHeader>("header", &bytes)?;
        decodes::<QueueSpaceRecord>("queue space", &bytes)?;
        decodes::<QueueDef>("queue", &bytes)?;
        decodes::<UdlEntry>("device list", &bytes)?;
        decodes::<VtocEntry>("VTOC", &bytes)?;
        decodes::<MessageMeta>("message", &bytes)?;
        decodes::<FiringRecord>("firing", &bytes)?;
        Ok(())
    });
}

/// A stored message splits into its record and body exactly when its length field fits,
/// and writing the parts back gives the same bytes.
#[test]
fn fuzz_stored_message_layout() {
    check(CASES * 2, stored_value(), |value| {
        match split_stored(&value) {
            Some(stored) => match stored.sums {
                Some(sums) => {
                    prop_assert_eq!(stored_len(stored.meta, stored.tail.len()), value.len());
                    let mut again = vec![0; value.len()];
                    write_stored(&mut again, stored.meta, stored.tail, stored.parted, sums.body);
                    // The record's checksum is computed again: the same bytes when it held.
                    prop_assert_eq!(again == value, sums.meta == checksum(stored.meta));
                }
                // Stored before the checksums: the word, the record, the body.
                None => prop_assert_eq!(4 + stored.meta.len() + stored.tail.len(), value.len()),
            },
            None => {
                // The length field is the word without its two top bits (the parts and
                // checksums flags); with checksums, 8 more bytes come before the record.
                let fits = value.len() >= 4 && {
                    let word = u32::from_le_bytes(value[..4].try_into().unwrap());
                    let head = if word & (1 << 30) != 0 { 12 } else { 4 };
                    head + (word & !(3 << 30)) as usize <= value.len()
                };
                prop_assert!(!fits, "a stored message that fits was not split");
            }
        }
        Ok(())
    });
}

/// Message ids qm makes map back to their sequence number, and only those: another
/// spelling of the same number (capitals, a sign) is a different id.
#[test]
fn fuzz_message_ids() {
    let id = prop_oneof![
        any::<u64>().prop_map(|n| msgid_of(n).0),
        "[0-9a-fA-F+]{16}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..20),
    ];
    check(CASES, (any::<u64>(), id), |(n, id)| {
        prop_assert_eq!(seq_of(&msgid_of(n)), Some(n));
        let id = MsgId(id);
        if let Some(seq) = seq_of(&id) {
            prop_assert_eq!(msgid_of(seq), id);
        }
        Ok(())
    });
}

/// What the tables of a queue space may hold after damage or tampering.
#[derive(Debug, Clone)]
struct Tables {
    messages: Vec<(u64, Vec<u8>)>,
    states: Vec<(String, Vec<u8>)>,
    firings: Vec<(u64, Vec<u8>)>,
}

fn tables() -> impl Strategy<Value = Tables> {
    let seq = prop_oneof![0u64..5, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()];
    let state_key = prop_oneof![
        Just("next_seq".to_string()),
        prop::sample::select(vec!["thr:q1:persistent", "thr:q2:nonpersistent", "thr:q1:x", "thr:"])
            .prop_map(String::from),
        "[a-z:]{0,12}",
    ];
    let state_value = prop::collection::vec(any::<u8>(), 0..10);
    (
        prop::collection::vec((seq.clone(), stored_value()), 0..6),
        prop::collection::vec((state_key, state_value), 0..4),
        prop::collection::vec((seq, prop::collection::vec(any::<u8>(), 0..40)), 0..3),
    )
        .prop_map(|(messages, states, firings)| Tables { messages, states, firings })
}

/// Loading a queue space whose tables hold anything at all: loaded, or refused with a
/// message; never a crash.
#[test]
fn fuzz_queue_space_loading() {
    check(CASES, tables(), |t| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("QS.db");
        files::create(&path, |_| Ok(())).map_err(|e| TestCaseError::fail(e.message))?;
        let (file, ()) =
            DbFile::open(&path, |_| Ok(())).map_err(|e| TestCaseError::fail(e.message))?;
        let db = file.get().unwrap();
        let names = QueueSpaceTables::new("QS");
        let txn = db.begin_write().unwrap();
        {
            let mut msg = txn.open_table(names.msg()).unwrap();
            for (k, v) in &t.messages {
                msg.insert(*k, v.as_slice()).unwrap();
            }
            let mut state = txn.open_table(names.state()).unwrap();
            for (k, v) in &t.states {
                state.insert(k.as_str(), v.as_slice()).unwrap();
            }
            let mut firings = txn.open_table(names.firings()).unwrap();
            for (k, v) in &t.firings {
                firings.insert(*k, v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let defs = vec![QueueDef::new("q1"), QueueDef::new("q2")];
        drop(db);
        if let Err(e) = recover(&file, &names, defs, 1024) {
            prop_assert!(e.message.len() > 30, "{:?}", e.message);
        }
        Ok(())
    });
}
