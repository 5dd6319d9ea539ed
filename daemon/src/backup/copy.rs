//! Copies tables of one redb file, as a read transaction sees them, into another: one
//! queue space's, for `qspacemove` (`qbackup` copies whole files as bytes).
//!
//! redb opens a table only with its key and value types, so each table qm keeps is named
//! here with its types; a table qm does not know stops the copy rather than being left
//! out. The journal's own table is not copied.

use qm_common::{QmError, QmResult};
use redb::{
    Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};

/// Counts what a copy moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copied {
    pub records: u64,
    pub bytes: u64,
}

/// Copies the tables of `src` named in `names` (those it has) into `dst`.
pub fn named(src: &ReadTransaction, dst: &WriteTransaction, names: &[&str]) -> QmResult<Copied> {
    let mut copied = Copied::default();
    let present: Vec<String> = src
        .list_tables()
        .map_err(|e| fail("listing the tables", e))?
        .map(|t| t.name().to_string())
        .filter(|n| names.contains(&n.as_str()))
        .collect();
    for name in present {
        copy_named(src, dst, &name, &mut copied, &mut |_| {})?;
    }
    Ok(copied)
}

fn fail(what: &str, e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("backup: {what}: {e}"))
}

/// The last part of a queue space's table name (`qs.NAME.msg` → `msg`).
fn kind(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or("")
}

fn copy_named(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    name: &str,
    copied: &mut Copied,
    progress: &mut dyn FnMut(u64),
) -> QmResult<()> {
    let mut c = Copy { src, dst, name, copied, progress };
    match name {
        "qm.journal" => Ok(()),
        "qm.header" | "qm.qspaces" => c.run::<&str, &[u8]>(),
        "qm.udl" | "qm.vtoc" => c.run::<u8, &[u8]>(),
        "qm.grants" => c.run::<(&str, &str), &[u8]>(),
        _ if name.starts_with("qs.") => match kind(name) {
            "queues" | "state" | "totals" => c.run::<&str, &[u8]>(),
            "init" | "msg" | "firings" => c.run::<u64, &[u8]>(),
            "parts" => c.run::<(u64, u32), &[u8]>(),
            "ready" | "corrid" | "age" => c.run::<&[u8], ()>(),
            "timers" => c.run::<(u64, u8, u64), ()>(),
            _ => Err(unknown(name)),
        },
        _ => Err(unknown(name)),
    }
}

fn unknown(name: &str) -> QmError {
    QmError::system(format!(
        "backup: the file holds a table this qm does not know ({name}); nothing was backed up \
         as complete"
    ))
}

struct Copy<'a> {
    src: &'a ReadTransaction,
    dst: &'a WriteTransaction,
    name: &'a str,
    copied: &'a mut Copied,
    progress: &'a mut dyn FnMut(u64),
}

/// Progress is told after this many bytes more.
const PROGRESS_EVERY: u64 = 16 << 20;

impl Copy<'_> {
    fn run<K: Key + 'static, V: Value + 'static>(&mut self) -> QmResult<()> {
        let def = TableDefinition::<K, V>::new(self.name);
        let what = format!("copying table {}", self.name);
        let from = self.src.open_table(def).map_err(|e| fail(&what, e))?;
        let mut to = self.dst.open_table(def).map_err(|e| fail(&what, e))?;
        let mut told = self.copied.bytes;
        for item in from.iter().map_err(|e| fail(&what, e))? {
            let (k, v) = item.map_err(|e| fail(&what, e))?;
            to.insert(k.value(), v.value()).map_err(|e| fail(&what, e))?;
            self.copied.records += 1;
            self.copied.bytes += (K::as_bytes(&k.value()).as_ref().len()
                + V::as_bytes(&v.value()).as_ref().len()) as u64;
            if self.copied.bytes >= told + PROGRESS_EVERY {
                told = self.copied.bytes;
                (self.progress)(told);
            }
        }
        Ok(())
    }
}
