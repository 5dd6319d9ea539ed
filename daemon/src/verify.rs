//! `qverify` and `qmd --verify`: checks a device's parts against each other.
//!
//! The device list (UDL) entries must not overlap in their files; every VTOC table must lie
//! on an entry that exists, inside it, overlapping no other table; each entry's free space
//! and tables must add up to its size; every queue space must have its extents and every
//! extent its queue space; every file of the device must be there and be this device's.
//! Then each queue space's messages are checked ([`crate::engine::verify`]). Reads go
//! through [`crate::storage::handle::DbFile::read`], so writes acknowledged but not yet in
//! redb are applied first and checked too.

use crate::engine::verify::queue_space;
use crate::storage::Device;
use crate::storage::bodies::Bodies;
use crate::storage::freemap::free_runs;
use crate::storage::records::QueueSpaceRecord;
use crate::storage::tables::QueueSpaceTables;
use qm_common::QmResult;
use qm_common::device::{UdlEntry, VtocEntry};
use qm_common::verify::{Problems, SpaceChecked, VerifyReport};
use redb::ReadTransaction;
use std::collections::{BTreeMap, HashSet};

/// What is verified: a device its daemon has open, or the copies in a backup.
pub trait Source {
    /// The device file, as the report names it.
    fn name(&self) -> String;
    fn page_size(&self) -> u32;
    fn udl(&self) -> QmResult<Vec<UdlEntry>>;
    fn vtoc(&self) -> QmResult<Vec<VtocEntry>>;
    fn qspaces(&self) -> QmResult<Vec<QueueSpaceRecord>>;
    /// The file an entry is in, as the report names it.
    fn file_of(&self, entry: &UdlEntry) -> String;
    /// Opens `file` and checks that it is this device's.
    fn open(&self, file: &str) -> QmResult<()>;
    /// Runs `f` in one read transaction of `file` that holds every write acknowledged,
    /// with the file's body segments.
    fn read(&self, file: &str, f: &mut dyn FnMut(&ReadTransaction, &Bodies)) -> QmResult<()>;
}

impl Source for Device {
    fn name(&self) -> String {
        self.path().display().to_string()
    }

    fn page_size(&self) -> u32 {
        Device::page_size(self)
    }

    fn udl(&self) -> QmResult<Vec<UdlEntry>> {
        Device::udl(self)
    }

    fn vtoc(&self) -> QmResult<Vec<VtocEntry>> {
        Device::vtoc(self)
    }

    fn qspaces(&self) -> QmResult<Vec<QueueSpaceRecord>> {
        Device::qspaces(self)
    }

    fn file_of(&self, entry: &UdlEntry) -> String {
        if entry.index == 0 { self.path().display().to_string() } else { entry.name.clone() }
    }

    fn open(&self, file: &str) -> QmResult<()> {
        self.file_db(file).map(drop)
    }

    fn read(&self, file: &str, f: &mut dyn FnMut(&ReadTransaction, &Bodies)) -> QmResult<()> {
        let db = self.file_db(file)?;
        db.read(|txn| {
            f(txn, db.bodies());
            Ok(())
        })
    }
}

/// Checks `device`: all of it, or (`only`) its lists and that one queue space. `progress`
/// is told how many queue spaces are done, of how many.
pub fn device(
    device: &dyn Source,
    only: Option<&str>,
    progress: &dyn Fn(u64, u64),
) -> QmResult<VerifyReport> {
    let mut report = VerifyReport { device: device.name(), ..Default::default() };
    let problems = &mut report.problems;
    let udl = match device.udl() {
        Ok(udl) => udl,
        Err(e) => {
            problems.add("UDL", format!("the device list cannot be read: {}", e.message));
            return Ok(report);
        }
    };
    let vtoc = match device.vtoc() {
        Ok(vtoc) => vtoc,
        Err(e) => {
            problems.add("VTOC", format!("the table of contents cannot be read: {}", e.message));
            return Ok(report);
        }
    };
    report.udl_entries = udl.len() as u32;
    report.vtoc_entries = vtoc.len() as u32;
    check_udl(device, &udl, problems);
    check_vtoc(&udl, &vtoc, problems);
    let records = match device.qspaces() {
        Ok(r) => r,
        Err(e) => {
            problems
                .add("queue spaces", format!("the queue space list cannot be read: {}", e.message));
            return Ok(report);
        }
    };
    check_extents(&vtoc, records.iter().map(|r| r.params.name.as_str()), problems);
    if let Some(name) = only
        && !records.iter().any(|r| r.params.name == name)
    {
        return Err(qm_common::QmError::not_found(format!("Queue space {name} does not exist")));
    }
    report.files = files(device, &udl, &mut report.problems);
    let chosen: Vec<_> =
        records.iter().filter(|r| only.is_none_or(|n| n == r.params.name)).collect();
    let total = chosen.len() as u64;
    for (done, record) in chosen.into_iter().enumerate() {
        progress(done as u64, total);
        let name = &record.params.name;
        // A queue space lives in the file of its first extent.
        let first = crate::admin::extents_of(&vtoc, name).into_iter().next();
        let Some(entry) = first.and_then(|t| udl.iter().find(|e| e.index == t.device)) else {
            continue; // said by check_extents or check_vtoc
        };
        let file = device.file_of(entry);
        let names = QueueSpaceTables::new(name);
        let page_size = device.page_size();
        let problems = &mut report.problems;
        let mut checked = None;
        let read = device.read(&file, &mut |txn, bodies| {
            checked = Some(queue_space(txn, bodies, &names, page_size, problems));
        });
        match (read, checked) {
            (Ok(()), Some(c)) => report.qspaces.push(SpaceChecked {
                name: name.clone(),
                file,
                messages: c.messages,
                bytes: c.bytes,
            }),
            (Err(e), _) => report.problems.add(&format!("queue space {name}"), e.message),
            (Ok(()), None) => {}
        }
    }
    if only.is_none() {
        for file in report.files.clone() {
            check_live(device, &file, &mut report.problems);
        }
    }
    progress(total, total);
    Ok(report)
}

/// The live bytes file `file` counts in each body segment must be what the messages of
/// all its message tables point at (a move's or destroy's leftovers included: they hold
/// their bodies until they are removed), and each such segment must be there.
fn check_live(device: &dyn Source, file: &str, problems: &mut Problems) {
    let mut found = Ok(Default::default());
    let mut listed = Vec::new();
    let read = device.read(file, &mut |txn, bodies| {
        listed = bodies.list().into_iter().map(|(n, _, _)| n).collect();
        found = crate::engine::segments::live_in(txn).and_then(|live| {
            // No segment and none counted: a reference anywhere would have failed its
            // message's check already, so the records need no second walk.
            if live.is_empty() && listed.is_empty() {
                return Ok((live, Default::default()));
            }
            Ok((live, crate::engine::segments::pointed_at(txn)?))
        });
    });
    let place = format!("body segments of {file}");
    let (found, counted) = match read.map_err(|e| e.message).and(found.map_err(|e| e.message)) {
        Ok(found) => found,
        Err(e) => return problems.add(&place, e),
    };
    for segment in counted.keys().chain(found.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (has, wants) = (found.get(segment), counted.get(segment));
        if has != wants {
            problems.add(
                &place,
                format!(
                    "segment {segment}: the file counts {} live bytes, its messages point at {}",
                    has.copied().unwrap_or(0),
                    wants.copied().unwrap_or(0)
                ),
            );
        }
        if !listed.contains(segment) {
            problems.add(&place, format!("segment {segment} is missing"));
        }
    }
}

/// Entries of one file must not overlap.
fn check_udl(device: &dyn Source, udl: &[UdlEntry], problems: &mut Problems) {
    let mut by_file: BTreeMap<String, Vec<&UdlEntry>> = BTreeMap::new();
    for entry in udl {
        if entry.size == 0 {
            problems.add(&format!("UDL entry {}", entry.index), "it has no pages");
        }
        by_file.entry(device.file_of(entry)).or_default().push(entry);
    }
    for (file, mut entries) in by_file {
        entries.sort_by_key(|e| e.start);
        for pair in entries.windows(2) {
            if pair[1].start < pair[0].end() {
                problems.add(
                    &format!("UDL entry {}", pair[1].index),
                    format!(
                        "pages {}-{} of {file} overlap entry {} (pages {}-{})",
                        pair[1].start,
                        pair[1].end() - 1,
                        pair[0].index,
                        pair[0].start,
                        pair[0].end() - 1
                    ),
                );
            }
        }
    }
}

/// Every table lies inside an entry that exists and overlaps no other; each entry's tables
/// and free runs add up to its size.
fn check_vtoc(udl: &[UdlEntry], vtoc: &[VtocEntry], problems: &mut Problems) {
    let label = |t: &VtocEntry| match t.extent {
        Some(n) => format!("VTOC table {} ({} extent {n})", t.index, t.name),
        None => format!("VTOC table {} ({})", t.index, t.name),
    };
    for table in vtoc {
        let Some(entry) = udl.iter().find(|e| e.index == table.device) else {
            problems.add(
                &label(table),
                format!("it is on UDL entry {}, which does not exist", table.device),
            );
            continue;
        };
        if table.offset < entry.start || table.offset + table.pages > entry.end() {
            problems.add(
                &label(table),
                format!(
                    "pages {}-{} lie outside UDL entry {} (pages {}-{})",
                    table.offset,
                    table.offset + table.pages.max(1) - 1,
                    entry.index,
                    entry.start,
                    entry.end() - 1
                ),
            );
        }
    }
    for entry in udl {
        let mut tables: Vec<&VtocEntry> = vtoc.iter().filter(|t| t.device == entry.index).collect();
        tables.sort_by_key(|t| t.offset);
        for pair in tables.windows(2) {
            if pair[1].offset < pair[0].offset + pair[0].pages {
                problems.add(
                    &label(pair[1]),
                    format!(
                        "pages {}-{} overlap {} (pages {}-{})",
                        pair[1].offset,
                        pair[1].offset + pair[1].pages.max(1) - 1,
                        label(pair[0]),
                        pair[0].offset,
                        pair[0].offset + pair[0].pages.max(1) - 1
                    ),
                );
            }
        }
        let used: u64 = tables.iter().map(|t| t.pages).sum();
        let free: u64 = free_runs(entry, vtoc).iter().map(|r| r.size).sum();
        if used + free != entry.size {
            problems.add(
                &format!("UDL entry {}", entry.index),
                format!(
                    "its tables take {used} pages and {free} are free, which is not its {} pages",
                    entry.size
                ),
            );
        }
    }
}

/// Every queue space has its first extent; every extent belongs to a queue space.
fn check_extents<'a>(
    vtoc: &[VtocEntry],
    qspaces: impl Iterator<Item = &'a str>,
    problems: &mut Problems,
) {
    let names: HashSet<&str> = qspaces.collect();
    for name in &names {
        let extents = crate::admin::extents_of(vtoc, name);
        if extents.first().and_then(|e| e.extent) != Some(0) {
            problems.add(&format!("queue space {name}"), "its first extent is not in the VTOC");
        }
    }
    for table in vtoc.iter().filter(|t| t.extent.is_some()) {
        if !names.contains(table.name.as_str()) {
            problems.add(
                &format!("VTOC table {}", table.index),
                format!("it is an extent of queue space {}, which does not exist", table.name),
            );
        }
    }
}

/// Opens every file of the device (which identifies it as this device's); the ones opened.
fn files(device: &dyn Source, udl: &[UdlEntry], problems: &mut Problems) -> Vec<String> {
    let mut seen = Vec::new();
    for entry in udl {
        let file = device.file_of(entry);
        if seen.contains(&file) {
            continue;
        }
        match device.open(&file) {
            Ok(()) => seen.push(file),
            Err(e) => problems.add(&file, e.message),
        }
    }
    seen
}

/// `qmd --verify DEVICE`: checks a device no daemon serves (its lock is taken for the
/// while). Opening its files applies what their journals hold, as a start would.
pub fn offline(path: &std::path::Path) -> Result<VerifyReport, String> {
    if !path.exists() {
        return Err(format!("{}: no such device file", path.display()));
    }
    let _lock = crate::server::lock_device(path)?;
    let opened = Device::open(path).map_err(|e| e.message)?;
    let shown = |done: u64, total: u64| {
        if total > 1 {
            eprintln!("qmd: checked {done} of {total} queue spaces");
        }
    };
    let report = device(&opened, None, &shown).map_err(|e| e.message);
    opened.close();
    report
}
