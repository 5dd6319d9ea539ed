//! Storage on redb: the device file with its UDL, VTOC and queue-space records, the other
//! files that UDL entries name, and each queue space's own tables; how each file is held
//! ([`handle`]) and kept from a full disk ([`space`]).

/// The range-lock methods of a `redb::StorageBackend` that wraps another one, the field
/// `$inner` of `self`:
/// locks are the wrapped file's business, so they are passed through as they are.
macro_rules! forward_range_locks {
    ($($inner:tt).+) => {
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$($inner).+.try_lock_range(start, end)
        }

        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$($inner).+.try_lock_shared_range(start, end)
        }

        fn lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$($inner).+.lock_range(start, end)
        }

        fn lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$($inner).+.lock_shared_range(start, end)
        }

        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$($inner).+.unlock_range(start, end)
        }

        fn query_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$($inner).+.query_lock_range(start, end)
        }
    };
}
use forward_range_locks;

pub mod bodies;
pub mod device;
mod direct;
pub mod fault;
pub mod fence;
pub mod files;
pub mod freemap;
pub mod handle;
pub mod journal;
mod overlay;
pub mod records;
pub mod space;
pub mod tables;

pub use device::Device;
