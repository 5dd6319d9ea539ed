//! Journal records written straight to the device: one `pwrite` on a descriptor opened
//! with `O_DIRECT | O_DSYNC`, durable when it returns, instead of a copy into the page
//! cache, its write-back and an `fdatasync`.
//!
//! Why: a group is answered only once its record is durable, so the sync's latency is what
//! one client waits for, twice per enqueue and dequeue. On this project's machines a 1 KiB
//! direct, synchronous write took 11–27 % less time than the same write buffered and
//! followed by `fdatasync` (BENCHMARKS.md), with the same requests to the device (the data,
//! the inode when the file's times changed, and a cache flush).
//!
//! A direct write must start and end on a block boundary, from memory aligned the same way.
//! Records do not: each is written with the bytes of its first block that lie before it
//! (the end of the record before, kept from the last write here, or read back from the
//! file when it is not known) and zeros after it up to the next boundary. What the zeros
//! cover lies past the last record of the region, where only stale records or zeros are,
//! which a scan never reads on from (see [`super::journal`]); the bytes written again before
//! the record are the ones already there, so a write torn by a power cut leaves the record
//! before it whole.
//!
//! Used only where the filesystem takes direct writes (not tmpfs, for one) and no storage
//! fault is armed (the tests' power cuts undo writes not followed by a sync, which a direct
//! write never is); `QM_JOURNAL_DIRECT=0` turns it off. Otherwise the journal writes and
//! syncs through its ordinary descriptor.

use crate::options::env_switch;
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The alignment of a direct write's memory, and of its offset and length where the
/// filesystem does not say what it needs: the page size, a multiple of every logical block
/// size a disk reports.
const BLOCK: usize = 4096;

/// The smallest offset alignment taken from the filesystem: a sector.
const SECTOR: usize = 512;

/// The journal's direct descriptor and what writing through it needs.
pub struct Direct {
    file: File,
    /// Memory for one write, with room to align its start to [`BLOCK`].
    buf: Vec<u8>,
    /// What a write's offset and length are aligned to: the filesystem's direct-I/O offset
    /// alignment when it reports one (Linux 6.1 and later), else [`BLOCK`].
    block: usize,
    /// The offset of the block the last record ended in, and that block's bytes up to the
    /// record's end: what the next record's write starts with. `None` when not known (after
    /// a failed write), when the next write reads them from the file.
    tail: Option<(u64, Box<[u8]>)>,
}

impl Direct {
    /// A direct descriptor on the same file as `file`, or `None` when direct writes are off
    /// or the filesystem does not take them.
    pub fn open(file: &File) -> Option<Direct> {
        if super::fault::armed() || !wanted() {
            return None;
        }
        // Through /proc, the very file already open and checked, not whatever its path
        // names now.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let flags = OFlags::WRONLY | OFlags::DIRECT | OFlags::DSYNC | OFlags::CLOEXEC;
        let direct = match rustix::fs::open(&path, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(e) => {
                tracing::debug!("journal written through the page cache: {e}");
                return None;
            }
        };
        let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return None;
        }
        let block = offset_alignment(&direct);
        tracing::debug!("journal written directly in blocks of {block} bytes");
        Some(Direct { file: direct, buf: Vec::new(), block, tail: None })
    }

    /// Writes the record `head` + `payload` at `at`, durably, unless the device was fenced
    /// ([`super::fence`]: qmd then stops). `read` reads bytes of the
    /// file (through the journal's ordinary descriptor), for the start of the block `at`
    /// lies in when it is not known here.
    pub fn write(
        &mut self,
        at: u64,
        head: &[u8],
        payload: &[u8],
        read: impl Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let block = self.block;
        let start = at - at % block as u64;
        let before = (at - start) as usize;
        let len = head.len() + payload.len();
        let total = (before + len).div_ceil(block) * block;
        let tail = self.tail.take();
        let out = aligned(&mut self.buf, total);
        match &tail {
            Some((block, bytes)) if *block == start => {
                out[..before].copy_from_slice(&bytes[..before])
            }
            _ => read(start, &mut out[..before])?,
        }
        out[before..before + head.len()].copy_from_slice(head);
        out[before + head.len()..before + len].copy_from_slice(payload);
        out[before + len..].fill(0);
        // Every record is a commit of its own: the fence is checked before each, as before
        // the first write of any commit.
        super::fence::check()?;
        self.file.write_all_at(out, start)?;
        let end = before + len;
        let last = end - end % block;
        let mut bytes = tail.map_or_else(|| vec![0u8; block].into_boxed_slice(), |(_, b)| b);
        bytes[..end - last].copy_from_slice(&out[last..end]);
        self.tail = Some((start + last as u64, bytes));
        Ok(())
    }
}

/// The offset alignment the filesystem asks of direct writes to `file`, when it says
/// (`statx` with `STATX_DIOALIGN`) and it lies between [`SECTOR`] and [`BLOCK`], else
/// [`BLOCK`]. Why: each record's write begins and ends on this boundary, so a group's
/// write carries on average a block of bytes besides its records; on a disk of 512-byte
/// sectors that is an eighth of what page-sized blocks cost (BENCHMARKS.md).
fn offset_alignment(file: &File) -> usize {
    let asked = rustix::fs::statx(
        file,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::DIOALIGN,
    );
    let Ok(st) = asked else { return BLOCK };
    let offset = st.stx_dio_offset_align as usize;
    let reported = st.stx_mask & rustix::fs::StatxFlags::DIOALIGN.bits() != 0;
    match reported && offset.is_power_of_two() && (SECTOR..=BLOCK).contains(&offset) {
        true => offset,
        false => BLOCK,
    }
}

/// Whether `QM_JOURNAL_DIRECT` leaves direct writes on (see [`env_switch`]).
fn wanted() -> bool {
    env_switch("QM_JOURNAL_DIRECT", "journal through the page cache", "straight to the disk")
}

/// `len` bytes of `buf` aligned to [`BLOCK`], `buf` grown to hold them if need be.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len + BLOCK {
        *buf = vec![0u8; (len + BLOCK).next_power_of_two()];
    }
    let skip = buf.as_ptr().align_offset(BLOCK);
    &mut buf[skip..skip + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes of 0xEE in a directory under /tmp (direct writes need a real
    /// filesystem), with its direct writer; `None` where the filesystem refuses them.
    fn file(len: usize) -> Option<(tempfile::TempDir, File, Direct)> {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, vec![0xEE; len]).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let direct = Direct::open(&file)?;
        Some((dir, file, direct))
    }

    fn contents(file: &File, len: usize) -> Vec<u8> {
        let mut all = vec![0u8; len];
        file.read_exact_at(&mut all, 0).unwrap();
        all
    }

    #[test]
    fn records_land_where_buffered_writes_would_put_them() {
        let Some((_dir, _file, direct)) = file(64 << 10) else {
            eprintln!("no direct writes on /tmp here: nothing to test");
            return;
        };
        // The filesystem's own alignment (512 bytes on a disk of 512-byte sectors), then
        // the page size, what is used where the filesystem does not say.
        assert!(direct.block.is_power_of_two() && (SECTOR..=BLOCK).contains(&direct.block));
        for block in [direct.block, SECTOR, BLOCK] {
            records_land_in_blocks_of(block);
        }
    }

    fn records_land_in_blocks_of(block: usize) {
        let (_dir, file, mut direct) = file(64 << 10).unwrap();
        if block < direct.block {
            // Smaller than the filesystem takes: such writes would be refused.
            return;
        }
        direct.block = block;
        // What the file must hold: each record at its place, zeros after the last one up
        // to its block's end, the bytes before the first untouched.
        let mut expected = contents(&file, 64 << 10);
        let mut at = 4096u64 + 100;
        let lens = [1105usize, 16, 4096 - 16, 5000, 3, 9000, 1121, 4096, 700];
        let read = |off: u64, out: &mut [u8]| file.read_exact_at(out, off);
        for (i, &n) in lens.iter().enumerate() {
            let head = [i as u8; 16];
            let payload: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            direct.write(at, &head, &payload, read).unwrap();
            let at_ = at as usize;
            expected[at_..at_ + 16].copy_from_slice(&head);
            expected[at_ + 16..at_ + 16 + n].copy_from_slice(&payload);
            let end = at_ + 16 + n;
            expected[end..end.div_ceil(direct.block) * direct.block].fill(0);
            at = end as u64;
            // Once, forget the tail: the next write reads it back from the file.
            if i == 4 {
                direct.tail = None;
            }
            assert_eq!(contents(&file, 64 << 10), expected, "blocks of {block}, after record {i}");
        }
    }
}
