//! Fuzzing of everything qm-common reads from outside: frames off a socket, every type that
//! crosses the wire, the configuration file and the parsers of typed values.
//!
//! Each property feeds random input and asserts no panic and, on failure, an error with a
//! message that names what was wrong. Where values can be generated, they must also survive
//! a round trip (encode, then decode, gives them back). `QM_FUZZ_SECS` makes them run longer
//! (see `fuzz_support`).

mod fuzz_support;

use fuzz_support::check;
use proptest::prelude::*;
use proptest::sample::Index;
use qm_common::config::{Config, ForwarderEntry, parse_clopt};
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::error::{Diagnostic, QmError};
use qm_common::frame::{Connection, FrameError, MAX_FRAME};
use qm_common::message::{
    Criteria, DequeueCtl, EnqueueCtl, Expiry, Message, MessageInfo, MsgId, Placement, Qos, Select,
    TimeSpec, TransactionInfo, escape_bytes, parse_corrid, unescape_bytes,
};
use qm_common::names::{check_command, check_device_path, check_qspace_name, check_queue_name};
use qm_common::order::{OutOfOrder, QueueOrder, SortKey, Tiebreak};
use qm_common::protocol::*;
use qm_common::qspace::{
    Attachment, MemorySize, MemoryUnit, QueueSpaceChange, QueueSpaceInfo, QueueSpaceParams,
    SizeEstimate,
};
use qm_common::queue::{
    AttrsChange, DefaultExpiration, DeliveryPolicy, DestroyMode, Persistence, QueueAttrs,
    QueueChange, QueueDef, QueueListing,
};
use qm_common::threshold::{Limit, LimitSet, LimitUnit, Threshold, parse_high, parse_low_of};
use qm_common::time::{parse_time_spec, parse_tuxedo_time};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Cases per property in a normal `cargo test`.
const CASES: u32 = 256;

/// Asserts that a refusal says something, and that it starts by naming `field`.
fn names_field(e: &QmError, field: &str) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.trim().is_empty(), "empty error message");
    prop_assert!(
        e.message.starts_with(field),
        "the error does not start with the field {:?}: {:?}",
        field,
        e.message
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generators of valid wire values.

/// Short names, odd text and the empty string.
fn text() -> BoxedStrategy<String> {
    prop_oneof![3 => "[A-Za-z0-9_.]{0,12}", 1 => any::<String>(), 1 => Just(String::new())].boxed()
}

fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max).boxed()
}

fn msgid() -> BoxedStrategy<MsgId> {
    bytes(40).prop_map(MsgId).boxed()
}

fn qos() -> BoxedStrategy<Qos> {
    prop_oneof![Just(Qos::Default), Just(Qos::Persistent), Just(Qos::NonPersistent)].boxed()
}

fn time_spec() -> BoxedStrategy<TimeSpec> {
    prop_oneof![
        any::<u64>().prop_map(TimeSpec::Absolute),
        any::<u64>().prop_map(TimeSpec::Relative)
    ]
    .boxed()
}

fn expiry() -> BoxedStrategy<Expiry> {
    prop_oneof![
        any::<u64>().prop_map(Expiry::Absolute),
        any::<u64>().prop_map(Expiry::Relative),
        Just(Expiry::Never)
    ]
    .boxed()
}

fn enqueue_ctl() -> BoxedStrategy<EnqueueCtl> {
    let placement = prop_oneof![
        Just(Placement::Ordered),
        Just(Placement::Top),
        msgid().prop_map(Placement::Before)
    ];
    (
        (any::<Option<u8>>(), prop::option::of(time_spec()), prop::option::of(expiry())),
        (placement, bytes(40), prop::option::of(text()), prop::option::of(text())),
        (prop::option::of(qos()), prop::option::of(qos()), any::<i64>(), any::<Option<u64>>()),
    )
        .prop_map(
            |(
                (priority, available, expiration),
                (placement, corrid, reply_queue, failure_queue),
                (delivery, reply_qos, urcode, wait_ms),
            )| EnqueueCtl {
                priority,
                available,
                expiration,
                placement,
                corrid,
                reply_queue,
                failure_queue,
                delivery,
                reply_qos,
                urcode,
                wait_ms,
            },
        )
        .boxed()
}

fn dequeue_ctl() -> BoxedStrategy<DequeueCtl> {
    let select = prop_oneof![
        Just(Select::First),
        msgid().prop_map(Select::Msgid),
        bytes(40).prop_map(Select::Corrid)
    ];
    (select, any::<bool>(), any::<Option<u64>>())
        .prop_map(|(select, peek, wait_ms)| DequeueCtl { select, peek, wait_ms })
        .boxed()
}

fn criteria() -> BoxedStrategy<Criteria> {
    (
        any::<Option<(u64, u64)>>(),
        any::<Option<(u8, u8)>>(),
        prop::option::of(msgid()),
        prop::option::of(bytes(40)),
        prop::option::of(qos()),
        any::<Option<(u64, u64)>>(),
    )
        .prop_map(|(time, priority, msgid, corrid, delivery, expiration)| Criteria {
            time,
            priority,
            msgid,
            corrid,
            delivery,
            expiration,
        })
        .boxed()
}

fn limit() -> BoxedStrategy<Limit> {
    let unit = prop_oneof![
        Just(LimitUnit::Bytes),
        Just(LimitUnit::Blocks),
        Just(LimitUnit::Percent),
        Just(LimitUnit::Messages)
    ];
    (any::<u64>(), unit).prop_map(|(value, unit)| Limit { value, unit }).boxed()
}

fn threshold() -> BoxedStrategy<Threshold> {
    (limit(), limit(), text())
        .prop_map(|(high, low, command)| Threshold { high, low, command })
        .boxed()
}

fn queue_order() -> BoxedStrategy<QueueOrder> {
    let key = prop_oneof![Just(SortKey::Priority), Just(SortKey::Time), Just(SortKey::Expiration)];
    let tiebreak = prop_oneof![Just(Tiebreak::Fifo), Just(Tiebreak::Lifo)];
    (prop::collection::vec(key, 0..4), tiebreak)
        .prop_map(|(keys, tiebreak)| QueueOrder { keys, tiebreak })
        .boxed()
}

fn out_of_order() -> BoxedStrategy<OutOfOrder> {
    any::<(bool, bool)>().prop_map(|(top, msgid)| OutOfOrder { top, msgid }).boxed()
}

fn delivery_policy() -> BoxedStrategy<DeliveryPolicy> {
    prop_oneof![Just(DeliveryPolicy::Persist), Just(DeliveryPolicy::NonPersist)].boxed()
}

fn default_expiration() -> BoxedStrategy<DefaultExpiration> {
    prop_oneof![Just(DefaultExpiration::None), any::<u64>().prop_map(DefaultExpiration::Relative)]
        .boxed()
}

fn queue_def() -> BoxedStrategy<QueueDef> {
    (
        (text(), queue_order(), out_of_order(), any::<u32>(), any::<u32>()),
        (threshold(), threshold(), delivery_policy(), default_expiration(), queue_attrs()),
    )
        .prop_map(
            |(
                (name, order, out_of_order, retries, retry_delay),
                (threshold, nonpersistent_threshold, delivery, expiration, attrs),
            )| QueueDef {
                name,
                order,
                out_of_order,
                retries,
                retry_delay,
                threshold,
                nonpersistent_threshold,
                delivery,
                expiration,
                attrs,
            },
        )
        .boxed()
}

fn persistence() -> BoxedStrategy<Persistence> {
    prop_oneof![
        Just(Persistence::Conditional),
        Just(Persistence::Persistent),
        Just(Persistence::Volatile)
    ]
    .boxed()
}

fn queue_attrs() -> BoxedStrategy<QueueAttrs> {
    (
        (any::<Option<u64>>(), any::<Option<u64>>(), any::<bool>(), any::<bool>()),
        (text(), any::<Option<u64>>(), persistence(), any::<u64>()),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(
                (max_messages, max_size, enqueue_enabled, dequeue_enabled),
                (annotation, idle_expiry, persistence, created),
                aliases,
            )| QueueAttrs {
                max_messages,
                max_size,
                enqueue_enabled,
                dequeue_enabled,
                annotation,
                idle_expiry,
                persistence,
                created,
                aliases,
            },
        )
        .boxed()
}

fn attrs_change() -> BoxedStrategy<AttrsChange> {
    (
        (any::<Option<Option<u64>>>(), any::<Option<Option<u64>>>(), any::<Option<bool>>()),
        (any::<Option<bool>>(), prop::option::of(text()), any::<Option<Option<u64>>>()),
        prop::option::of(persistence()),
    )
        .prop_map(
            |(
                (max_messages, max_size, enqueue_enabled),
                (dequeue_enabled, annotation, idle_expiry),
                persistence,
            )| AttrsChange {
                max_messages,
                max_size,
                enqueue_enabled,
                dequeue_enabled,
                annotation,
                idle_expiry,
                persistence,
            },
        )
        .boxed()
}

fn queue_change() -> BoxedStrategy<QueueChange> {
    (
        (text(), out_of_order(), any::<u32>(), any::<u32>(), threshold()),
        (
            prop::option::of(threshold()),
            prop::option::of(delivery_policy()),
            prop::option::of(default_expiration()),
            attrs_change(),
        ),
    )
        .prop_map(
            |(
                (name, out_of_order, retries, retry_delay, threshold),
                (nonpersistent_threshold, delivery, expiration, attrs),
            )| QueueChange {
                name,
                out_of_order,
                retries,
                retry_delay,
                threshold,
                nonpersistent_threshold,
                delivery,
                expiration,
                attrs,
            },
        )
        .boxed()
}

fn memory_size() -> BoxedStrategy<MemorySize> {
    let unit = prop_oneof![Just(MemoryUnit::Bytes), Just(MemoryUnit::Blocks)];
    (any::<u64>(), unit).prop_map(|(value, unit)| MemorySize { value, unit }).boxed()
}

fn qspace_params() -> BoxedStrategy<QueueSpaceParams> {
    (
        (text(), any::<u32>(), any::<u64>(), any::<(u32, u32, u32, u32)>()),
        (text(), any::<bool>(), any::<u32>(), memory_size(), any::<u32>(), any::<u64>()),
    )
        .prop_map(
            |(
                (name, ipc_key, pages, (queues, transactions, processes, messages)),
                (error_queue, initialize, blocking, nonpersistent, actions, overflow),
            )| QueueSpaceParams {
                name,
                ipc_key,
                pages,
                queues,
                transactions,
                processes,
                messages,
                error_queue,
                initialize,
                blocking,
                nonpersistent,
                actions,
                overflow,
            },
        )
        .boxed()
}

fn qspace_change() -> BoxedStrategy<QueueSpaceChange> {
    (
        (text(), any::<u32>(), any::<(u32, u32, u32)>(), text(), any::<bool>()),
        (any::<u32>(), prop::option::of(memory_size()), any::<Option<u32>>(), any::<Option<u64>>()),
    )
        .prop_map(
            |(
                (name, ipc_key, (transactions, processes, messages), error_queue, initialize),
                (blocking, nonpersistent, actions, overflow),
            )| QueueSpaceChange {
                name,
                ipc_key,
                transactions,
                processes,
                messages,
                error_queue,
                initialize,
                blocking,
                nonpersistent,
                actions,
                overflow,
            },
        )
        .boxed()
}

fn hello() -> BoxedStrategy<Hello> {
    let kind = prop_oneof![
        Just(ClientKind::Admin),
        Just(ClientKind::Application),
        Just(ClientKind::Forwarder)
    ];
    (any::<u16>(), text(), kind)
        .prop_map(|(version, program, kind)| Hello { version, program, kind })
        .boxed()
}

fn request() -> BoxedStrategy<Request> {
    let daemon = prop_oneof![
        Just(DaemonRequest::Status),
        Just(DaemonRequest::Stop),
        Just(DaemonRequest::Names)
    ];
    let device = prop_oneof![
        (text(), any::<u64>(), any::<u64>(), any::<Option<u32>>()).prop_map(
            |(device, offset, size, page_size)| DeviceRequest::Create {
                device,
                offset,
                size,
                page_size
            }
        ),
        any::<Option<u8>>().prop_map(|index| DeviceRequest::List { index }),
        any::<u8>().prop_map(|index| DeviceRequest::Destroy { index }),
        Just(DeviceRequest::Vtoc),
        (any::<u8>(), prop::option::of(text()))
            .prop_map(|(index, new_name)| DeviceRequest::Rename { index, new_name }),
    ];
    let qspace = prop_oneof![
        qspace_params().prop_map(QueueSpaceRequest::Create),
        prop::option::of(text()).prop_map(|name| QueueSpaceRequest::List { name }),
        qspace_change().prop_map(QueueSpaceRequest::Change),
        (text(), any::<bool>())
            .prop_map(|(name, force)| QueueSpaceRequest::Destroy { name, force }),
        text().prop_map(|name| QueueSpaceRequest::Open { name }),
        Just(QueueSpaceRequest::Close),
        (text(), any::<u64>())
            .prop_map(|(name, pages)| QueueSpaceRequest::AddExtent { name, pages }),
        (any::<u64>(), any::<(u32, u32, u32, u32)>(), memory_size()).prop_map(
            |(pages, (queues, transactions, processes, messages), nonpersistent)| {
                QueueSpaceRequest::Size {
                    pages,
                    queues,
                    transactions,
                    processes,
                    messages,
                    nonpersistent,
                }
            }
        ),
        prop::option::of(text()).prop_map(|name| QueueSpaceRequest::Ipcs { name }),
        (text(), any::<bool>()).prop_map(|(name, force)| QueueSpaceRequest::Ipcrm { name, force }),
    ];
    let mode =
        prop_oneof![Just(DestroyMode::Normal), Just(DestroyMode::Purge), Just(DestroyMode::Force)];
    let queue = prop_oneof![
        queue_def().prop_map(QueueRequest::Create),
        queue_change().prop_map(QueueRequest::Change),
        (text(), mode).prop_map(|(name, mode)| QueueRequest::Destroy { name, mode }),
        prop::option::of(text()).prop_map(|name| QueueRequest::Info { name }),
        text().prop_map(|name| QueueRequest::Get { name }),
    ];
    let data = prop_oneof![
        (prop::option::of(text()), any::<Option<u32>>())
            .prop_map(|(qspace, timeout_secs)| DataRequest::Begin { qspace, timeout_secs }),
        Just(DataRequest::Commit),
        Just(DataRequest::Abort),
        (prop::option::of(text()), text(), enqueue_ctl(), bytes(64)).prop_map(
            |(qspace, queue, ctl, body)| DataRequest::Enqueue { qspace, queue, ctl, body }
        ),
        (prop::option::of(text()), text(), dequeue_ctl())
            .prop_map(|(qspace, queue, ctl)| DataRequest::Dequeue { qspace, queue, ctl }),
    ];
    let message = prop_oneof![
        (text(), criteria()).prop_map(|(queue, criteria)| MessageRequest::List { queue, criteria }),
        (text(), criteria())
            .prop_map(|(queue, criteria)| MessageRequest::Delete { queue, criteria }),
        (text(), criteria(), any::<u8>()).prop_map(|(queue, criteria, priority)| {
            MessageRequest::ChangePriority { queue, criteria, priority }
        }),
        (text(), criteria(), text()).prop_map(|(queue, criteria, new_queue)| {
            MessageRequest::ChangeQueue { queue, criteria, new_queue }
        }),
        (text(), criteria(), time_spec()).prop_map(|(queue, criteria, time)| {
            MessageRequest::ChangeTime { queue, criteria, time }
        }),
        (text(), criteria(), expiry()).prop_map(|(queue, criteria, expiry)| {
            MessageRequest::ChangeExpiration { queue, criteria, expiry }
        }),
        Just(MessageRequest::Transactions),
        any::<(u64, bool)>().prop_map(|(id, commit)| MessageRequest::Complete { id, commit }),
    ];
    let automation = prop_oneof![
        any::<u32>().prop_map(|id| AutomationRequest::Boot { id }),
        (any::<Option<u32>>(), prop::option::of(text()))
            .prop_map(|(id, queue)| AutomationRequest::Shutdown { id, queue }),
        Just(AutomationRequest::Servers),
        prop::option::of(text()).prop_map(|queue| AutomationRequest::ThresholdLog { queue }),
        (text(), any::<bool>()).prop_map(|(queue, nonpersistent)| {
            AutomationRequest::ThresholdTest { queue, nonpersistent }
        }),
        Just(AutomationRequest::Reload),
    ];
    prop_oneof![
        hello().prop_map(Request::Hello),
        daemon.prop_map(Request::Daemon),
        device.prop_map(Request::Device),
        qspace.prop_map(Request::QueueSpace),
        queue.prop_map(Request::Queue),
        data.prop_map(Request::Data),
        message.prop_map(Request::Message),
        automation.prop_map(Request::Automation),
    ]
    .boxed()
}

fn message() -> BoxedStrategy<Message> {
    (
        (msgid(), bytes(40), any::<u8>(), any::<u64>(), any::<Option<u64>>()),
        (prop::option::of(text()), prop::option::of(text()), qos(), prop::option::of(qos())),
        (any::<i64>(), any::<u32>(), prop::option::of(text()), bytes(64)),
    )
        .prop_map(
            |(
                (msgid, corrid, priority, enqueued, expiration),
                (reply_queue, failure_queue, delivery, reply_qos),
                (urcode, retries, origin_queue, body),
            )| Message {
                msgid,
                corrid,
                priority,
                enqueued,
                expiration,
                reply_queue,
                failure_queue,
                delivery,
                reply_qos,
                urcode,
                retries,
                origin_queue,
                body,
            },
        )
        .boxed()
}

fn qm_error() -> BoxedStrategy<QmError> {
    let diagnostic = prop::sample::select(vec![
        Diagnostic::Inval,
        Diagnostic::NotOpen,
        Diagnostic::Tran,
        Diagnostic::BadMsgid,
        Diagnostic::System,
        Diagnostic::Os,
        Diagnostic::Aborted,
        Diagnostic::Proto,
        Diagnostic::BadQueue,
        Diagnostic::NoMsg,
        Diagnostic::InUse,
        Diagnostic::NoSpace,
        Diagnostic::NotFound,
        Diagnostic::Exists,
        Diagnostic::Denied,
    ]);
    (diagnostic, text()).prop_map(|(diagnostic, message)| QmError { diagnostic, message }).boxed()
}

fn response() -> BoxedStrategy<Response> {
    let note = (any::<bool>(), text())
        .prop_map(|(warn, text)| if warn { Note::warn(text) } else { Note::info(text) });
    let reply = prop_oneof![
        Just(Reply::Unit),
        (prop::collection::vec(text(), 0..3), prop::collection::vec(text(), 0..3))
            .prop_map(|(qspaces, queues)| Reply::Names(Names { qspaces, queues })),
        text().prop_map(Reply::DeviceName),
        queue_def().prop_map(|d| Reply::Queue(Box::new(d))),
        msgid().prop_map(Reply::Enqueued),
        message().prop_map(|m| Reply::Message(Box::new(m))),
        any::<u64>().prop_map(Reply::Transaction),
        any::<u64>().prop_map(Reply::Count),
        any::<(u64, u64)>().prop_map(|(changed, held)| Reply::Changed { changed, held }),
    ];
    prop_oneof![
        (any::<u16>(), any::<u32>(), text(), any::<u64>()).prop_map(
            |(version, daemon_pid, device, session)| Response::Welcome(Welcome {
                version,
                daemon_pid,
                device,
                session
            })
        ),
        any::<(u64, u64)>().prop_map(|(done, total)| Response::Progress(Progress { done, total })),
        (reply, prop::collection::vec(note, 0..3))
            .prop_map(|(reply, notes)| Response::Done { reply, notes }),
        qm_error().prop_map(Response::Failed),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Decoding arbitrary bytes.

/// Bytes as a decoder may meet them: random, or a valid encoding with a few bytes changed,
/// cut short or grown.
fn wire_bytes() -> BoxedStrategy<Vec<u8>> {
    let valid = prop_oneof![
        request().prop_map(|r| postcard::to_stdvec(&r).unwrap()),
        response().prop_map(|r| postcard::to_stdvec(&r).unwrap()),
    ];
    let edits = prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 0..4);
    prop_oneof![
        1 => bytes(64),
        2 => (valid, edits).prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, byte),
                    _ => bytes.extend([byte; 5]),
                }
            }
            bytes
        }),
    ]
    .boxed()
}

/// Decodes `bytes` as a `T`; what decodes must encode and decode to itself again.
fn decodes_cleanly<T>(bytes: &[u8]) -> Result<Option<T>, TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match postcard::from_bytes::<T>(bytes) {
        Ok(value) => {
            let again =
                postcard::to_stdvec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded = postcard::from_bytes::<T>(&again).ok();
            prop_assert_eq!(decoded.as_ref(), Some(&value));
            Ok(Some(value))
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(None)
        }
    }
}

/// Runs the checks the daemon runs on what it receives: they may refuse, with a message,
/// but never panic.
fn validate_request(request: &Request) -> Result<(), TestCaseError> {
    let results = match request {
        Request::QueueSpace(QueueSpaceRequest::Create(p)) => vec![p.validate()],
        Request::QueueSpace(QueueSpaceRequest::Change(c)) => vec![c.validate()],
        Request::Queue(QueueRequest::Create(d)) => vec![
            d.validate(),
            d.threshold.validate(LimitSet::Persistent),
            d.nonpersistent_threshold.validate(LimitSet::NonPersistent),
        ],
        Request::Queue(QueueRequest::Change(c)) => {
            let mut def = QueueDef::new(c.name.clone());
            c.apply(&mut def);
            vec![def.validate()]
        }
        Request::Data(DataRequest::Enqueue { ctl, queue, .. }) => {
            vec![ctl.validate(), check_queue_name(queue)]
        }
        Request::Data(DataRequest::Dequeue { ctl, .. }) => vec![ctl.validate()],
        Request::Device(DeviceRequest::Create { device, page_size, .. }) => vec![
            check_device_path(device),
            page_size.map_or(Ok(()), qm_common::device::check_page_size),
        ],
        Request::Message(
            MessageRequest::List { criteria, .. } | MessageRequest::Delete { criteria, .. },
        ) => vec![criteria.msgid.as_ref().map_or(Ok(()), MsgId::validate)],
        _ => Vec::new(),
    };
    for result in results {
        if let Err(e) = result {
            prop_assert!(!e.message.trim().is_empty(), "empty refusal of {:?}", request);
        }
    }
    Ok(())
}

/// Every wire type, decoded from arbitrary bytes: no panic, and what decodes round-trips.
#[test]
fn fuzz_every_wire_type_decodes_arbitrary_bytes() {
    check(CASES * 2, wire_bytes(), |bytes| {
        if let Some(request) = decodes_cleanly::<Request>(&bytes)? {
            validate_request(&request)?;
        }
        decodes_cleanly::<Response>(&bytes)?;
        decodes_cleanly::<Hello>(&bytes)?;
        decodes_cleanly::<Welcome>(&bytes)?;
        decodes_cleanly::<Reply>(&bytes)?;
        decodes_cleanly::<QmError>(&bytes)?;
        decodes_cleanly::<DataRequest>(&bytes)?;
        decodes_cleanly::<MessageRequest>(&bytes)?;
        decodes_cleanly::<QueueSpaceRequest>(&bytes)?;
        decodes_cleanly::<QueueRequest>(&bytes)?;
        decodes_cleanly::<DeviceRequest>(&bytes)?;
        decodes_cleanly::<AutomationRequest>(&bytes)?;
        decodes_cleanly::<DaemonRequest>(&bytes)?;
        decodes_cleanly::<DaemonStatus>(&bytes)?;
        decodes_cleanly::<Names>(&bytes)?;
        decodes_cleanly::<ForwarderInfo>(&bytes)?;
        decodes_cleanly::<FiringRecord>(&bytes)?;
        decodes_cleanly::<DeviceListing>(&bytes)?;
        decodes_cleanly::<VtocEntry>(&bytes)?;
        decodes_cleanly::<QueueSpaceInfo>(&bytes)?;
        decodes_cleanly::<SizeEstimate>(&bytes)?;
        decodes_cleanly::<Attachment>(&bytes)?;
        decodes_cleanly::<QueueListing>(&bytes)?;
        decodes_cleanly::<TransactionInfo>(&bytes)?;
        decodes_cleanly::<MessageInfo>(&bytes)?;
        if let Some(msg) = decodes_cleanly::<Message>(&bytes)? {
            let _ = msg.msgid.validate();
        }
        if let Some(ctl) = decodes_cleanly::<EnqueueCtl>(&bytes)? {
            let _ = ctl.validate();
        }
        if let Some(def) = decodes_cleanly::<QueueDef>(&bytes)? {
            let _ = def.validate();
        }
        decodes_cleanly::<Config>(&bytes)?;
        Ok(())
    });
}

/// Valid requests and responses come back equal after encoding and decoding.
#[test]
fn fuzz_wire_values_round_trip() {
    check(CASES, (request(), response()), |(request, response)| {
        let bytes = postcard::to_stdvec(&request).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), request.clone());
        let bytes = postcard::to_stdvec(&response).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Response>(&bytes).unwrap(), response);
        validate_request(&request)
    });
}

// ---------------------------------------------------------------------------------------
// The frame reader.

/// What a frame's length prefix announces.
#[derive(Debug, Clone)]
enum Announce {
    /// The payload's real length.
    Exact,
    /// Exactly [`MAX_FRAME`], with the payload padded to it.
    Max,
    /// One byte over the limit.
    OverMax,
    /// Far over the limit (up to 4 GiB).
    Huge(u32),
    /// A small length unrelated to the payload: the stream gets out of step.
    Small(u32),
    /// Any length at all, with the payload as it is (usually cut short).
    Any(u32),
}

/// One frame as the test writes it.
#[derive(Debug, Clone)]
struct FrameSpec {
    announce: Announce,
    payload: Vec<u8>,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let announce = prop_oneof![
        12 => Just(Announce::Exact),
        1 => Just(Announce::Max),
        1 => Just(Announce::OverMax),
        1 => ((MAX_FRAME as u32 + 1)..=u32::MAX).prop_map(Announce::Huge),
        1 => (0u32..8).prop_map(Announce::Small),
        1 => any::<u32>().prop_map(Announce::Any),
    ];
    let payload = prop_oneof![
        2 => request().prop_map(|r| postcard::to_stdvec(&r).unwrap()),
        1 => response().prop_map(|r| postcard::to_stdvec(&r).unwrap()),
        2 => wire_bytes(),
    ];
    (announce, payload).prop_map(|(announce, payload)| FrameSpec { announce, payload })
}

/// Frames, and where the stream is cut short (if it is).
fn frame_stream() -> impl Strategy<Value = (Vec<FrameSpec>, Option<Index>)> {
    let cut = prop_oneof![3 => Just(None), 1 => any::<Index>().prop_map(Some)];
    (prop::collection::vec(frame_spec(), 0..6), cut)
}

/// The bytes of `frames` one after the other, cut after `cut` bytes if given.
fn stream_of(frames: &[FrameSpec], cut: Option<Index>) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let mut payload = frame.payload.clone();
        let len = match frame.announce {
            Announce::Exact => payload.len() as u32,
            Announce::Max => {
                payload.resize(MAX_FRAME, 0);
                MAX_FRAME as u32
            }
            Announce::OverMax => MAX_FRAME as u32 + 1,
            Announce::Huge(n) | Announce::Small(n) | Announce::Any(n) => n,
        };
        out.extend(len.to_be_bytes());
        out.extend(payload);
    }
    if let Some(cut) = cut {
        out.truncate(cut.index(out.len() + 1));
    }
    out
}

/// What reading the next frame must give, worked out from the bytes alone.
#[derive(Debug)]
enum Expected<T> {
    /// A whole frame that decodes.
    Frame(T),
    /// A whole frame that does not decode: refused, and the stream stays in step.
    Malformed,
    /// A length over the limit: refused before anything is read or allocated.
    TooLarge(usize),
    /// The stream ends inside a frame's body.
    Truncated,
    /// The stream ends inside a length prefix.
    EndInPrefix,
    /// The stream ends between frames.
    End,
}

fn expected<T: DeserializeOwned>(mut rest: &[u8]) -> Vec<Expected<T>> {
    let mut out = Vec::new();
    loop {
        if rest.is_empty() {
            out.push(Expected::End);
            return out;
        }
        let Some(prefix) = rest.get(..4) else {
            out.push(Expected::EndInPrefix);
            return out;
        };
        let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        rest = &rest[4..];
        if len > MAX_FRAME {
            out.push(Expected::TooLarge(len));
            return out;
        }
        let Some(payload) = rest.get(..len) else {
            out.push(Expected::Truncated);
            return out;
        };
        rest = &rest[len..];
        out.push(match postcard::from_bytes::<T>(payload) {
            Ok(v) => Expected::Frame(v),
            Err(_) => Expected::Malformed,
        });
    }
}

/// Reads `stream` frame by frame as a `T` and compares each outcome with [`expected`].
fn read_matches_model<T>(
    runtime: &tokio::runtime::Runtime,
    stream: &[u8],
) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + PartialEq + Debug,
{
    runtime.block_on(async {
        let mut conn = Connection::new(stream, tokio::io::sink());
        for want in expected::<T>(stream) {
            let got = conn.read_frame::<T>().await;
            if let Err(e) = &got {
                prop_assert!(!e.to_string().trim().is_empty(), "empty error for {:?}", e);
            }
            match (want, got) {
                (Expected::Frame(v), Ok(Some(got))) => prop_assert_eq!(got, v),
                (Expected::Malformed, Err(FrameError::Decode(m))) => {
                    prop_assert!(!m.is_empty());
                }
                (Expected::TooLarge(n), Err(e @ FrameError::TooLarge(_))) => {
                    let text = e.to_string();
                    prop_assert!(
                        text.contains(&n.to_string()) && text.contains(&MAX_FRAME.to_string()),
                        "{}",
                        text
                    );
                    return Ok(());
                }
                (Expected::Truncated, Err(_)) => return Ok(()),
                (Expected::EndInPrefix, Ok(None) | Err(_)) => return Ok(()),
                (Expected::End, Ok(None)) => return Ok(()),
                (want, got) => {
                    prop_assert!(false, "expected {:?}, read {:?}", want, got.map(|_| "a value"));
                }
            }
        }
        Ok(())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Streams of frames (valid, garbage, lengths small, huge, exactly at the limit, one over
/// it) cut anywhere: the reader gives each whole frame, refuses each bad one with a message
/// and stays in step, and reports an over-long or cut-short frame.
#[test]
fn fuzz_frame_reader_follows_the_stream() {
    let runtime = runtime();
    check(CASES, frame_stream(), |(frames, cut)| {
        let stream = stream_of(&frames, cut);
        read_matches_model::<Request>(&runtime, &stream)?;
        read_matches_model::<Response>(&runtime, &stream)
    });
}

/// Arbitrary bytes as a stream, as a hostile peer would send them.
#[test]
fn fuzz_frame_reader_takes_arbitrary_bytes() {
    let runtime = runtime();
    check(CASES, bytes(256), |stream| {
        read_matches_model::<Request>(&runtime, &stream)?;
        read_matches_model::<Response>(&runtime, &stream)
    });
}

/// What `write_frame` sends, `read_frame` gives back, frame after frame.
#[test]
fn fuzz_frames_round_trip() {
    let runtime = runtime();
    let strategy = prop::collection::vec(request(), 1..5);
    check(CASES, strategy, |requests| {
        runtime.block_on(async {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut writer = Connection::new(tokio::io::empty(), a);
            for r in &requests {
                writer.write_frame(r).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            drop(writer);
            let mut reader = Connection::new(b, tokio::io::sink());
            for r in &requests {
                let got = reader.read_frame::<Request>().await.ok().flatten();
                prop_assert_eq!(got.as_ref(), Some(r));
            }
            prop_assert!(matches!(reader.read_frame::<Request>().await, Ok(None)));
            Ok(())
        })
    });
}

// ---------------------------------------------------------------------------------------
// The configuration file.

/// Lines a configuration file may hold, right or wrong.
fn config_text() -> impl Strategy<Value = String> {
    let number = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "2",
        "60",
        "86400",
        "86401",
        "-86400001",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "1.5",
        "\"7\"",
        "true",
    ]);
    let name = prop::sample::select(vec!["QS", "q1", "q2", "", "a b", "x,y", "Q\u{7}"]);
    let word = prop::sample::select(vec![
        "-q", "-t", "-i", "-e", "-d", "-b", "-n", "-f", "--", "-A", "-x", "q1", "q1,q2", "q1,q1",
        "5", "-10", "abc",
    ]);
    let clopt = prop::collection::vec(word, 0..6).prop_map(|w| w.join(" "));
    let line = prop_oneof![
        Just("[thresholds]".to_string()),
        number.clone().prop_map(|n| format!("command_timeout = {n}")),
        Just("[[forwarder]]".to_string()),
        number.clone().prop_map(|n| format!("id = {n}")),
        name.clone().prop_map(|n| format!("qspace = \"{n}\"")),
        clopt.prop_map(|c| format!("clopt = \"{c}\"")),
        prop::collection::vec(name.clone(), 0..3).prop_map(|q| format!(
            "queues = [{}]",
            q.iter().map(|q| format!("\"{q}\"")).collect::<Vec<_>>().join(", ")
        )),
        number.clone().prop_map(|n| format!("transaction_timeout = {n}")),
        number.clone().prop_map(|n| format!("idle = {n}")),
        number.clone().prop_map(|n| format!("exit_when_empty = {n}")),
        any::<bool>().prop_map(|b| format!("delete_on_failure = {b}")),
        any::<bool>().prop_map(|b| format!("boot = {b}")),
        name.clone().prop_map(|n| format!("[service.{n}]")),
        name.prop_map(|n| format!("[service.\"{n}\"]")),
        prop::sample::select(vec!["cat", "", "  ", "/bin/true"])
            .prop_map(|c| format!("command = \"{c}\"")),
        prop::sample::select(vec!["exec", "worker", "Worker", ""])
            .prop_map(|m| format!("mode = \"{m}\"")),
        number.clone().prop_map(|n| format!("min = {n}")),
        number.clone().prop_map(|n| format!("max = {n}")),
        number.clone().prop_map(|n| format!("max_requests = {n}")),
        number.clone().prop_map(|n| format!("timeout = {n}")),
        Just("bogus = 1".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        4 => prop::collection::vec(line, 0..14).prop_map(|lines| lines.join("\n")),
        1 => any::<String>(),
    ]
}

/// A configuration is accepted whole (every forwarder resolves, and it round-trips through
/// TOML) or refused with a message that says it is the configuration or which forwarder.
#[test]
fn fuzz_config_file() {
    check(CASES * 2, config_text(), |text| {
        match Config::parse(&text) {
            Ok(config) => {
                for f in &config.forwarders {
                    let def = f.resolve();
                    prop_assert!(def.is_ok(), "accepted, yet forwarder {} fails: {:?}", f.id, def);
                }
                let again =
                    toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(Config::parse(&again).ok(), Some(config), "{}", again);
            }
            Err(e) => {
                prop_assert!(
                    e.message.starts_with("configuration: ") || e.message.starts_with("forwarder "),
                    "{:?}",
                    e.message
                );
                prop_assert!(e.message.len() > "configuration: ".len(), "{:?}", e.message);
            }
        }
        Ok(())
    });
}

/// Tuxedo CLOPT strings: parsed, or refused naming clopt and the option at fault.
#[test]
fn fuzz_clopt() {
    let word = prop_oneof![
        prop::sample::select(vec![
            "-q", "-t", "-i", "-e", "-d", "-b", "-n", "-f", "--", "-A", "-s", "q1", "a,b", "5",
            "-5", "x",
        ])
        .prop_map(String::from),
        "[^ ]{0,6}",
    ];
    check(CASES, prop::collection::vec(word, 0..8), |words| {
        let text = words.join(" ");
        match parse_clopt(&text) {
            Ok(_) => {}
            Err(e) => names_field(&e, "clopt")?,
        }
        Ok(())
    });
}

/// A forwarder entry with any field values: resolved, or refused naming the forwarder.
#[test]
fn fuzz_forwarder_entries() {
    let entry = (
        (any::<u32>(), text(), prop::option::of(text())),
        (
            prop::option::of(prop::collection::vec(text(), 0..3)),
            any::<Option<u32>>(),
            any::<Option<i64>>(),
        ),
        (any::<Option<bool>>(), any::<Option<bool>>(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, qspace, clopt),
                (queues, transaction_timeout, idle),
                (exit_when_empty, delete_on_failure, boot),
            )| ForwarderEntry {
                id,
                qspace,
                clopt,
                queues,
                transaction_timeout,
                idle,
                exit_when_empty,
                delete_on_failure,
                boot,
            },
        );
    check(CASES, entry, |entry| {
        match entry.resolve() {
            Ok(def) => {
                prop_assert!(!def.queues.is_empty());
                let _ = def.idle_duration();
            }
            Err(e) => {
                prop_assert!(
                    e.message.starts_with("forwarder "),
                    "the error does not name the forwarder: {:?}",
                    e.message
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Parsers of typed values (shared by qmadmin's arguments and prompts).

/// Text as a user may type it: random, or made of the characters these parsers look at.
fn typed() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[0-9+%bBm, \\-]{0,14}",
        1 => "[0-9a-zA-Z\\\\+%,._ -]{0,20}",
        1 => any::<String>(),
        1 => prop::sample::select(vec![
            "", " ", "0", "1", "100%", "101%", "0m", "18446744073709551615b",
            "18446744073709551616b", "99999999999999999999999m", "-5", "+", "+0", "+4294967295",
            "+4294967296", "none", "NONE", "fifo", "lifo", "priority,time,expiration,fifo",
            "fifo,lifo", "top,msgid", "none,top", "persist", "nonpersist", "default", "\\", "\\2",
            "\\zz", "\\00", "3712312359", "3801", "6912", "7001", "000229", "250229", "240229",
            "00", "1", "123", "\u{e9}", "1\u{e9}", "1b\u{e9}", "\u{661}\u{662}%",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// Capacity limits: accepted values print back as themselves, refusals name the limit.
#[test]
fn fuzz_limits() {
    check(CASES * 2, (typed(), typed()), |(high_text, low_text)| {
        for set in [LimitSet::Persistent, LimitSet::NonPersistent] {
            let high_field = match set {
                LimitSet::Persistent => "High limit",
                LimitSet::NonPersistent => "Non-persistent (-n) high limit",
            };
            let low_field = match set {
                LimitSet::Persistent => "Reset (low) limit",
                LimitSet::NonPersistent => "Non-persistent (-n) reset (low) limit",
            };
            match parse_high(&high_text, set) {
                Ok(high) => {
                    prop_assert_eq!(parse_high(&high.to_string(), set).ok(), Some(high));
                    match parse_low_of(&low_text, high, set) {
                        Ok(low) => {
                            prop_assert_eq!(low.unit, high.unit);
                            prop_assert_eq!(
                                parse_low_of(&low.to_string(), high, set).ok(),
                                Some(low)
                            );
                        }
                        Err(e) => names_field(&e, low_field)?,
                    }
                }
                Err(e) => names_field(&e, high_field)?,
            }
        }
        let option = format!("{high_text},{low_text}");
        if let Err(e) = Threshold::parse_nonpersistent(&option) {
            prop_assert!(
                e.message.starts_with("-n") || e.message.starts_with("Non-persistent (-n)"),
                "{:?}",
                e.message
            );
        }
        Ok(())
    });
}

/// Tuxedo times and `+seconds`: refusals name the field; an accepted range is in order.
#[test]
fn fuzz_times() {
    check(CASES * 2, typed(), |text| {
        match parse_tuxedo_time("Time", &text) {
            Ok((first, last)) => prop_assert!(first <= last, "{} > {}", first, last),
            Err(e) => names_field(&e, "Time")?,
        }
        match parse_time_spec("Availability time", &text) {
            Ok(_) => prop_assert!(qm_common::time::looks_like_time(&text)),
            Err(e) => names_field(&e, "Availability time")?,
        }
        Ok(())
    });
}

/// Message and correlation identifiers as typed, with `\xx` escapes.
#[test]
fn fuzz_identifiers() {
    check(CASES * 2, (typed(), bytes(40)), |(text, raw)| {
        match MsgId::parse(&text) {
            Ok(id) => {
                prop_assert!(id.validate().is_ok());
                prop_assert_eq!(MsgId::parse(&id.to_string()).ok(), Some(id));
            }
            Err(e) => names_field(&e, "Message id")?,
        }
        match parse_corrid(&text) {
            Ok(c) => prop_assert!(c.len() <= qm_common::message::ID_MAX),
            Err(e) => names_field(&e, "Correlation id")?,
        }
        // Any bytes survive escaping; identifiers of 1 to 32 of them parse back.
        prop_assert_eq!(unescape_bytes("x", &escape_bytes(&raw)).ok(), Some(raw.clone()));
        let id = MsgId(raw);
        if id.validate().is_ok() {
            prop_assert_eq!(MsgId::parse(&id.to_string()).ok(), Some(id));
        }
        Ok(())
    });
}

/// Words with a fixed set of spellings (orders, policies, sizes): accepted ones print back
/// as an equal value, refusals name the field.
#[test]
fn fuzz_keyword_values() {
    fn round_trip<T>(text: &str, field: &str) -> Result<(), TestCaseError>
    where
        T: std::str::FromStr<Err = QmError> + std::fmt::Display + PartialEq + Debug,
    {
        match text.parse::<T>() {
            Ok(v) => prop_assert_eq!(v.to_string().parse::<T>().ok(), Some(v)),
            Err(e) => names_field(&e, field)?,
        }
        Ok(())
    }
    check(CASES * 2, typed(), |text| {
        round_trip::<QueueOrder>(&text, "Queue order")?;
        round_trip::<OutOfOrder>(&text, "Out-of-ordering enqueuing")?;
        round_trip::<Qos>(&text, "Delivery mode")?;
        round_trip::<DeliveryPolicy>(&text, "Delivery policy")?;
        round_trip::<DefaultExpiration>(&text, "Default expiration")?;
        round_trip::<MemorySize>(&text, "Non-persistent memory")?;
        Ok(())
    });
}

/// Names and paths: accepted or refused naming which kind of name.
#[test]
fn fuzz_names() {
    check(CASES * 2, prop_oneof![typed(), "[A-Za-z/\\t ,\u{0}\u{a0}]{0,130}".boxed()], |text| {
        for (check_one, field) in [
            (check_qspace_name as fn(&str) -> Result<(), QmError>, "Queue space name"),
            (check_queue_name, "Queue name"),
            (check_device_path, "Device name"),
            (qm_common::names::check_error_queue_name, "Error queue name"),
        ] {
            if let Err(e) = check_one(&text) {
                names_field(&e, field)?;
            }
        }
        if let Err(e) = check_command("Queue capacity command", &text) {
            names_field(&e, "Queue capacity command")?;
        }
        Ok(())
    });
}

/// Addresses as users write them (`--connect`, `QM_CONNECT`): parsed and shown back the same
/// way, or refused naming the forms an address may take.
#[test]
fn fuzz_addresses() {
    let address = prop_oneof![
        (prop::sample::select(vec!["unix:", "tcp://", "tls+tcp://", "http://", ""]), "[^\n]{0,24}")
            .prop_map(|(scheme, rest)| format!("{scheme}{rest}")),
        ("[a-z0-9.:\\[\\]-]{0,16}", any::<u32>())
            .prop_map(|(host, port)| format!("tls+tcp://{host}:{port}")),
    ];
    check(CASES * 2, address, |text| {
        match qm_common::address::Address::parse(&text) {
            Ok(address) => {
                let again = qm_common::address::Address::parse(&address.to_string());
                prop_assert_eq!(again.as_ref(), Ok(&address), "{}", text);
            }
            Err(e) => prop_assert!(e.contains(qm_common::address::ADDRESS_FORMS), "{}", e),
        }
        Ok(())
    });
}

/// Connection files of any content: read, or refused naming the file; never a panic.
#[test]
fn fuzz_connection_files() {
    let dir = tempfile_dir();
    let path = dir.join("conn.json");
    check(CASES, bytes(300), |content| {
        std::fs::write(&path, &content).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = qm_common::address::ConnectionFile::read(&path) {
            prop_assert!(e.contains(&path.display().to_string()), "{}", e);
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private directory for one test's files.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}
