//! Storage on redb: the device file with its UDL, VTOC and queue-space records, the other
//! files that UDL entries name, and each queue space's own tables; how each file is held
//! ([`handle`]) and kept from a full disk ([`space`]).

pub mod device;
pub mod fault;
pub mod files;
pub mod freemap;
pub mod handle;
mod overlay;
pub mod records;
pub mod space;
pub mod tables;

pub use device::Device;
