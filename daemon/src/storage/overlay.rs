//! A redb backend that holds redb's writes in memory until qm knows the file is its own.
//!
//! Opening a file with redb writes to it (a recovery flag, a repair after a crash, the
//! allocator state at close) before qm can read a single record. Through this backend the
//! file is only read while qm looks at its header: what redb writes meanwhile is kept in
//! memory, in order. If the file is qm's, [`Release::write_through`] replays those writes on
//! the file exactly as redb made them (syncs included, so a crash during the replay is a
//! crash redb recovers from) and from then on every operation goes straight to the file. If
//! it is not, dropping the database drops the writes and the file is as it was.

use redb::StorageBackend;
use std::collections::HashMap;
use std::io::{Error, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const BLOCK: u64 = 4096;

/// One operation redb made while the file was only being looked at.
#[derive(Debug)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
    Sync,
}

#[derive(Debug)]
struct Held {
    len: u64,
    /// Bytes of the file below this offset are still what the file holds; above it they
    /// were cut off by a shorter length and read as zeros.
    file_len: u64,
    blocks: HashMap<u64, Vec<u8>>,
    ops: Vec<Op>,
}

#[derive(Debug)]
struct Shared {
    file: Box<dyn StorageBackend>,
    /// True while writes are held; once false, never again.
    holding: AtomicBool,
    held: Mutex<Held>,
}

/// The backend redb gets.
#[derive(Debug)]
pub struct Overlay(Arc<Shared>);

/// What lets the held writes go to the file.
pub struct Release(Arc<Shared>);

impl Overlay {
    pub fn new(file: impl StorageBackend) -> std::io::Result<(Overlay, Release)> {
        let file: Box<dyn StorageBackend> = Box::new(file);
        let len = file.len()?;
        let held = Held { len, file_len: len, blocks: HashMap::new(), ops: Vec::new() };
        let shared =
            Arc::new(Shared { file, holding: AtomicBool::new(true), held: Mutex::new(held) });
        Ok((Overlay(shared.clone()), Release(shared)))
    }

    fn holding(&self) -> Option<MutexGuard<'_, Held>> {
        if !self.0.holding.load(Ordering::Acquire) {
            return None;
        }
        let held = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: the writes may have just been let go.
        self.0.holding.load(Ordering::Acquire).then_some(held)
    }

    /// Block `index` as the file holds it (zeros past what is left of the file).
    fn file_block(&self, held: &Held, index: u64) -> std::io::Result<Vec<u8>> {
        let start = index * BLOCK;
        let mut block = vec![0; BLOCK as usize];
        let available = held.file_len.saturating_sub(start).min(BLOCK) as usize;
        if available > 0 {
            self.0.file.read(start, &mut block[..available])?;
        }
        Ok(block)
    }
}

impl Release {
    /// Writes what redb wrote so far to the file, in order, and sends everything after
    /// straight to it.
    pub fn write_through(self) -> std::io::Result<()> {
        let mut held = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        for op in std::mem::take(&mut held.ops) {
            match op {
                Op::Write(offset, data) => self.0.file.write(offset, &data)?,
                Op::SetLen(len) => self.0.file.set_len(len)?,
                Op::Sync => self.0.file.sync_data()?,
            }
        }
        held.blocks.clear();
        self.0.holding.store(false, Ordering::Release);
        Ok(())
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> std::io::Result<u64> {
        match self.holding() {
            Some(held) => Ok(held.len),
            None => self.0.file.len(),
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let Some(held) = self.holding() else { return self.0.file.read(offset, out) };
        if offset.saturating_add(out.len() as u64) > held.len {
            return Err(Error::from(ErrorKind::UnexpectedEof));
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(out.len() - done);
            match held.blocks.get(&index) {
                Some(block) => out[done..done + n].copy_from_slice(&block[within..within + n]),
                None => {
                    let block = self.file_block(&held, index)?;
                    out[done..done + n].copy_from_slice(&block[within..within + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let Some(mut held) = self.holding() else { return self.0.file.set_len(len) };
        if len < held.len {
            held.blocks.retain(|index, _| index * BLOCK < len);
            let (index, within) = (len / BLOCK, (len % BLOCK) as usize);
            if let Some(block) = held.blocks.get_mut(&index) {
                block[within..].fill(0);
            }
            held.file_len = held.file_len.min(len);
        }
        held.len = len;
        held.ops.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let Some(mut held) = self.holding() else { return self.0.file.sync_data() };
        held.ops.push(Op::Sync);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let Some(mut held) = self.holding() else { return self.0.file.write(offset, data) };
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(data.len() - done);
            if !held.blocks.contains_key(&index) {
                let block = self.file_block(&held, index)?;
                held.blocks.insert(index, block);
            }
            let block = held.blocks.get_mut(&index).expect("just inserted");
            block[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        held.len = held.len.max(offset + data.len() as u64);
        held.ops.push(Op::Write(offset, data.to_vec()));
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.file.close()
    }

    super::forward_range_locks!(0.file);
}
