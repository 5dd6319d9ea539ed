//! A redb backend that reads a file and keeps every write in memory.
//!
//! Opening a file with redb writes to it (a recovery flag, a repair after a crash, the
//! allocator state at close) before qm can read a single record. To learn whether a file is
//! qm's without changing it, redb opens it through this backend: the file is only read, and
//! what redb writes lives in memory until the backend is dropped.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::collections::HashMap;
use std::io::{Error, ErrorKind};
use std::ops::Bound;
use std::sync::Mutex;

const BLOCK: u64 = 4096;

#[derive(Debug)]
struct State {
    len: u64,
    /// Bytes of the file below this offset are still what the file holds; above it they
    /// were cut off by a shorter length and read as zeros.
    file_len: u64,
    blocks: HashMap<u64, Vec<u8>>,
}

/// The file's bytes with redb's writes laid over them.
#[derive(Debug)]
pub struct Overlay {
    file: FileBackend,
    state: Mutex<State>,
}

impl Overlay {
    pub fn new(file: FileBackend) -> std::io::Result<Overlay> {
        let len = file.len()?;
        Ok(Overlay {
            file,
            state: Mutex::new(State { len, file_len: len, blocks: HashMap::new() }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block `index` as the file holds it (zeros past what is left of the file).
    fn base_block(&self, state: &State, index: u64) -> std::io::Result<Vec<u8>> {
        let start = index * BLOCK;
        let mut block = vec![0; BLOCK as usize];
        let available = state.file_len.saturating_sub(start).min(BLOCK) as usize;
        if available > 0 {
            self.file.read(start, &mut block[..available])?;
        }
        Ok(block)
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let state = self.state();
        if offset.saturating_add(out.len() as u64) > state.len {
            return Err(Error::from(ErrorKind::UnexpectedEof));
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(out.len() - done);
            match state.blocks.get(&index) {
                Some(block) => out[done..done + n].copy_from_slice(&block[within..within + n]),
                None => {
                    let block = self.base_block(&state, index)?;
                    out[done..done + n].copy_from_slice(&block[within..within + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.state();
        if len < state.len {
            state.blocks.retain(|index, _| index * BLOCK < len);
            let (index, within) = (len / BLOCK, (len % BLOCK) as usize);
            if let Some(block) = state.blocks.get_mut(&index) {
                block[within..].fill(0);
            }
            state.file_len = state.file_len.min(len);
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.state();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(data.len() - done);
            if !state.blocks.contains_key(&index) {
                let block = self.base_block(&state, index)?;
                state.blocks.insert(index, block);
            }
            let block = state.blocks.get_mut(&index).expect("just inserted");
            block[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}
