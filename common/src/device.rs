//! The device model: universal device list (UDL) entries, VTOC entries and free space.
//!
//! A device is the file named by `QMCONFIG`. Its UDL lists up to 25 entries, each a run of
//! pages on some file; entry 0 is the device itself at offset 0, and its first pages hold
//! the VTOC and the UDL. The VTOC lists up to 100 tables: itself, the UDL, and every extent
//! of every queue space. Page numbers are absolute block numbers within an entry's file.

use crate::error::{QmError, QmResult};
use serde::{Deserialize, Serialize};

/// Most entries a UDL holds.
pub const UDL_MAX: usize = 25;
/// Most entries a VTOC holds.
pub const VTOC_MAX: usize = 100;
/// Pages of entry 0 that hold the VTOC, from offset 0.
pub const VTOC_PAGES: u64 = 7;
/// Pages of entry 0 that hold the UDL, right after the VTOC.
pub const UDL_PAGES: u64 = 28;
/// Pages at the start of entry 0 that are never free.
pub const RESERVED_PAGES: u64 = VTOC_PAGES + UDL_PAGES;
/// Page size of a new device unless `crdl -p` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1024;
/// Slots of a free-space map, as Tuxedo reports them ("1 entry used 47 available").
pub const FREE_MAP_SLOTS: usize = 48;
/// Largest entry size accepted by `crdl`, in pages (2^40: far beyond any disk).
pub const ENTRY_MAX_PAGES: u64 = 1 << 40;
/// Bytes of bookkeeping charged to every persistent message on top of its body.
pub const MESSAGE_OVERHEAD: u64 = 128;

/// Blocks (pages) a persistent message of `body_len` bytes uses in its queue space.
pub fn message_blocks(body_len: u64, page_size: u32) -> u64 {
    (MESSAGE_OVERHEAD + body_len).div_ceil(u64::from(page_size.max(1)))
}

/// Checks a page size given to `crdl -p`.
pub fn check_page_size(size: u32) -> QmResult<()> {
    if !(512..=65536).contains(&size) || !size.is_power_of_two() {
        return Err(QmError::invalid(
            "Page size",
            size,
            "it must be a power of two from 512 to 65536 bytes",
        ));
    }
    Ok(())
}

/// One entry of the universal device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdlEntry {
    pub index: u8,
    /// Absolute path of the file.
    pub name: String,
    /// First block of the entry within the file.
    pub start: u64,
    /// Size of the entry in pages.
    pub size: u64,
}

impl UdlEntry {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Whether `size` pages are enough for the first entry (the device itself), which holds the
/// VTOC and the UDL. qmd checks this when it creates the device; qmadmin asks again at a
/// terminal.
pub fn check_first_entry_size(size: u64) -> QmResult<()> {
    if size < RESERVED_PAGES {
        return Err(QmError::invalid(
            "Device size",
            size,
            &format!(
                "the first entry holds the VTOC and UDL and needs at least {RESERVED_PAGES} pages"
            ),
        ));
    }
    Ok(())
}

/// Entry `index` of `udl`, if it may be destroyed: it exists, holds no extent of a queue
/// space (per `vtoc`) and, for entry 0 (the device itself), is the last entry left. qmd
/// checks this before it destroys; qmadmin before it asks for confirmation.
pub fn check_destroy(udl: &[UdlEntry], vtoc: &[VtocEntry], index: u8) -> QmResult<UdlEntry> {
    let entry =
        udl.iter().find(|e| e.index == index).cloned().ok_or_else(|| {
            QmError::not_found(format!("Device list entry {index} does not exist"))
        })?;
    let mut users: Vec<&str> = vtoc
        .iter()
        .filter(|t| t.device == index && t.extent.is_some())
        .map(|t| t.name.as_str())
        .collect();
    users.dedup();
    if !users.is_empty() {
        return Err(QmError::in_use(format!(
            "Device list entry {index} holds extents of queue space {}; destroy them first",
            users.join(", ")
        )));
    }
    if index == 0 && udl.len() > 1 {
        return Err(QmError::in_use(
            "Device list entry 0 can be destroyed only after every other entry (dsdl them first)",
        ));
    }
    Ok(entry)
}

/// A contiguous run of free pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeRun {
    pub addr: u64,
    pub size: u64,
}

/// One table of the volume table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtocEntry {
    pub index: u8,
    /// `VTOC`, `UDL`, or the queue space an extent belongs to.
    pub name: String,
    /// For queue-space extents, the extent's number within its queue space.
    pub extent: Option<u32>,
    /// UDL index of the entry the table lives on.
    pub device: u8,
    pub offset: u64,
    pub pages: u64,
}

/// A UDL entry with its free-space map, as `lidl` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntryInfo {
    pub entry: UdlEntry,
    pub free: Vec<FreeRun>,
}

/// What `lidl` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListing {
    pub device: String,
    pub page_size: u32,
    pub entries: Vec<DeviceEntryInfo>,
}
