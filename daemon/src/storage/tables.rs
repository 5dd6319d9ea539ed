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

/// Names of one queue space's tables.
#[derive(Debug, Clone)]
pub struct QueueSpaceTables {
    /// Queue name → [`QueueDef`](qm_common::queue::QueueDef).
    pub queues: String,
    /// Filler written while initializing extents, removed afterwards.
    pub init: String,
}

impl QueueSpaceTables {
    pub fn new(qspace: &str) -> Self {
        QueueSpaceTables {
            queues: format!("qs.{qspace}.queues"),
            init: format!("qs.{qspace}.init"),
        }
    }

    pub fn queues(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.queues)
    }

    pub fn init(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.init)
    }

    /// Every table of the queue space, for destroying it.
    pub fn all(&self) -> [&str; 2] {
        [&self.queues, &self.init]
    }
}
