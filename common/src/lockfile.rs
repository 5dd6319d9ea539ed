//! What a device's lock file (`DEVICE.lock`) says: who serves the device, and the fencing
//! generation (see the daemon's `storage::fence`). One line of fixed length,
//! `generation G pid P`, so that a rewrite in place never leaves the tail of a longer one.

/// Length of the line kept in the lock file.
pub const LINE_LEN: usize = 48;

/// What the lock file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holder {
    /// Raised by every daemon that starts serving, and by `qmd --fence`.
    pub generation: u64,
    /// The daemon that raised it last; 0 after `qmd --fence`.
    pub pid: u32,
}

impl Holder {
    /// Reads the line; an empty or unreadable one (a lock file from before fencing, or
    /// never written) is generation 0, pid 0.
    pub fn parse(bytes: &[u8]) -> Holder {
        let text = String::from_utf8_lossy(bytes);
        let mut words = text.split_whitespace();
        let mut holder = Holder::default();
        while let (Some(key), Some(value)) = (words.next(), words.next()) {
            match key {
                "generation" => holder.generation = value.parse().unwrap_or(0),
                "pid" => holder.pid = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        holder
    }

    /// The line as it is written.
    pub fn line(&self) -> [u8; LINE_LEN] {
        let text = format!("generation {} pid {}", self.generation, self.pid);
        let mut line = [b' '; LINE_LEN];
        line[..text.len()].copy_from_slice(text.as_bytes());
        line[LINE_LEN - 1] = b'\n';
        line
    }

    /// Reads what the lock file `file` says.
    pub fn read(file: &std::fs::File) -> std::io::Result<Holder> {
        use std::os::unix::fs::FileExt;
        let mut bytes = [0u8; LINE_LEN];
        let mut got = 0;
        while got < LINE_LEN {
            match file.read_at(&mut bytes[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        Ok(Holder::parse(&bytes[..got]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let h = Holder { generation: u64::MAX, pid: u32::MAX };
        assert_eq!(Holder::parse(&h.line()), h);
        assert_eq!(Holder::parse(b""), Holder::default());
        assert_eq!(Holder::parse(b"garbage"), Holder::default());
    }
}
