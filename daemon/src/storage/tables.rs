//! Table names. Device-wide tables live in the device file; each queue space's tables live
//! in the file its extents are on, under names that carry the queue space's name.

use redb::TableDefinition;

/// `header` → [`DeviceHeader`](super::records::DeviceHeader) or `file` →
/// [`FileHeader`](super::records::FileHeader).
pub const HEADER: TableDefinition<&str, &[u8]> = TableDefinition::new("qm.header");
/// UDL index → [`UdlEntry`](qm_common::device::UdlEntry).
pub const UDL: TableDefinition<u8, &[u8]> = TableDefinition::new("qm.udl");
/// VTOC index → [`VtocEntry`](qm_common::device::VtocEntry).
pub const VTOC: TableDefinition<u8, &[u8]> = TableDefinition::new("qm.vtoc");
/// Queue space name → [`QueueSpaceRecord`](super::records::QueueSpaceRecord).
pub const QSPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("qm.qspaces");
/// (Principal pattern, scope) → the [`Right`](qm_common::rights::Right)s granted there. In
/// the device file, so that rights travel with the device; made by the first grant.
pub const GRANTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("qm.grants");

/// Names of one queue space's tables.
#[derive(Debug, Clone)]
pub struct QueueSpaceTables {
    /// The queue space's name, which every table name carries.
    pub qspace: String,
    /// Queue name → [`QueueDef`](qm_common::queue::QueueDef).
    pub queues: String,
    /// Filler that earlier releases wrote while initializing extents (removed afterwards,
    /// or with the queue space).
    pub init: String,
    /// Message sequence number → the stored message: its
    /// [`MessageMeta`](crate::engine::record::MessageMeta) and body (see
    /// [`write_stored`](crate::engine::record::write_stored)).
    pub msg: String,
    /// (Message sequence number, part number) → the first bytes of a large body, cut as
    /// [`body_layout`](crate::engine::record::body_layout) says.
    pub parts: String,
    /// Name → state value (sequence high-water mark, threshold states).
    pub state: String,
    /// Number → [`FiringRecord`](qm_common::protocol::FiringRecord) of threshold commands.
    pub firings: String,
    /// (Queue, order key) of every stored message that may be dequeued now: the queue's
    /// order (see [`crate::engine::stored`]).
    pub ready: String,
    /// (Queue, correlation id, order key) of the same messages, for dequeues by corrid.
    pub corrid: String,
    /// (Time, kind, sequence number): when stored messages become available or expire.
    pub timers: String,
    /// (Queue, enqueue time, sequence number) of every stored message: a queue's messages,
    /// oldest first.
    pub age: String,
    /// Queue name → its stored messages totalled
    /// ([`Totals`](crate::engine::stored::Totals)), so that loading reads no message.
    pub totals: String,
}

impl QueueSpaceTables {
    pub fn new(qspace: &str) -> Self {
        QueueSpaceTables {
            qspace: qspace.to_string(),
            queues: format!("qs.{qspace}.queues"),
            init: format!("qs.{qspace}.init"),
            msg: format!("qs.{qspace}.msg"),
            parts: format!("qs.{qspace}.parts"),
            state: format!("qs.{qspace}.state"),
            firings: format!("qs.{qspace}.firings"),
            ready: format!("qs.{qspace}.ready"),
            corrid: format!("qs.{qspace}.corrid"),
            timers: format!("qs.{qspace}.timers"),
            age: format!("qs.{qspace}.age"),
            totals: format!("qs.{qspace}.totals"),
        }
    }

    pub fn queues(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.queues)
    }

    pub fn init(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.init)
    }

    pub fn msg(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.msg)
    }

    pub fn parts(&self) -> TableDefinition<'_, (u64, u32), &'static [u8]> {
        TableDefinition::new(&self.parts)
    }

    pub fn state(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.state)
    }

    pub fn firings(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.firings)
    }

    pub fn totals(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.totals)
    }

    /// Every table of the queue space, for destroying it.
    pub fn all(&self) -> [&str; 11] {
        [
            &self.queues,
            &self.init,
            &self.msg,
            &self.parts,
            &self.state,
            &self.firings,
            &self.ready,
            &self.corrid,
            &self.timers,
            &self.age,
            &self.totals,
        ]
    }
}
