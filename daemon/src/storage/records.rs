//! The records qm keeps in its redb files, and how they are encoded.
//!
//! Records are postcard-encoded. Every file starts with a header naming its format, so a
//! later release can refuse or convert an older file instead of misreading it.

use qm_common::qspace::QueueSpaceParams;
use qm_common::queue::{QueueAttrs, QueueDef};
use qm_common::{QmError, QmResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Format of the files this release writes.
pub const FORMAT: u32 = 1;
pub const DEVICE_MAGIC: &str = "qm-device";
pub const FILE_MAGIC: &str = "qm-file";

/// The header of a device file (entry 0's file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHeader {
    pub magic: String,
    pub format: u32,
    pub page_size: u32,
    /// Random identity, recorded in every other file of the device.
    pub device_id: u64,
    pub created: u64,
}

/// The header of another file named by a UDL entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    pub magic: String,
    pub format: u32,
    pub device_id: u64,
    pub device_path: String,
}

/// A queue space as the device records it; its extents are VTOC entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpaceRecord {
    /// The parameters as created or last changed; `pages` is the first extent's size.
    pub params: QueueSpaceParams,
    /// Whether its extents were initialized (written through) on disk.
    pub initialized: bool,
    pub created: u64,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    qm_common::frame::encode_sized(value, 0).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> QmResult<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| QmError::system(format!("stored {what} record cannot be read: {e}")))
}

/// A queue definition as stored: with its attributes, or as written before queues had
/// them (which then get the defaults, creation time unknown).
pub fn decode_queue(bytes: &[u8]) -> QmResult<QueueDef> {
    if let Ok(def) = postcard::from_bytes::<QueueDef>(bytes) {
        return Ok(def);
    }
    let old: QueueDefV1 = decode("queue", bytes)?;
    Ok(QueueDef {
        name: old.name,
        order: old.order,
        out_of_order: old.out_of_order,
        retries: old.retries,
        retry_delay: old.retry_delay,
        threshold: old.threshold,
        nonpersistent_threshold: old.nonpersistent_threshold,
        delivery: old.delivery,
        expiration: old.expiration,
        attrs: QueueAttrs::default(),
    })
}

/// The queue record of format 1 before queue attributes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct QueueDefV1 {
    name: String,
    order: qm_common::order::QueueOrder,
    out_of_order: qm_common::order::OutOfOrder,
    retries: u32,
    retry_delay: u32,
    threshold: qm_common::threshold::Threshold,
    nonpersistent_threshold: qm_common::threshold::Threshold,
    delivery: qm_common::queue::DeliveryPolicy,
    expiration: qm_common::queue::DefaultExpiration,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random identifier (never 0), from the system's generator; should that fail, from the
/// clock and the pid, which still tells files made at different moments apart.
pub fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    let id = if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_ok()
    {
        u64::from_le_bytes(bytes)
    } else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    };
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue record written before queue attributes is read with the defaults.
    #[test]
    fn queue_records_before_attributes() {
        let def = QueueDef { retries: 3, ..QueueDef::new("OLD") };
        let old = QueueDefV1 {
            name: def.name.clone(),
            order: def.order.clone(),
            out_of_order: def.out_of_order,
            retries: def.retries,
            retry_delay: def.retry_delay,
            threshold: def.threshold.clone(),
            nonpersistent_threshold: def.nonpersistent_threshold.clone(),
            delivery: def.delivery,
            expiration: def.expiration,
        };
        assert_eq!(decode_queue(&encode(&old)).unwrap(), def);
        let new = QueueDef {
            attrs: QueueAttrs { max_messages: Some(9), ..QueueAttrs::default() },
            ..def
        };
        assert_eq!(decode_queue(&encode(&new)).unwrap(), new);
    }
}
