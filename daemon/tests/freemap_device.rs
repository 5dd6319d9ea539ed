//! Free-space maps are exact after any sequence of `qspacecreate`, `qaddext` and
//! `qspacedestroy`, on a real device.
//!
//! The unit property test in `storage/freemap.rs` checks the pure functions. This one drives
//! the real admin handlers in-process ([`qm_daemon::admin::handle`]) on a real redb device in
//! a temporary directory: entry 0 on the device file plus one entry on another file and
//! sometimes one more on the device file (after a gap), in random order. Random sequences
//! create queue spaces (4 to 200 pages), add extents to them and destroy them (forced),
//! while an independent model keeps a page bitmap per entry and allocates as qm promises:
//! pages round down to a multiple of 4, first fit in entry-index then address order, and
//! `qaddext` only from entries on the file the queue space lives in.
//!
//! After every step it proves that:
//! * `lidl`'s free-space map of every entry equals the model's free runs;
//! * `livtoc`'s extents equal the model's allocations, offsets included (first fit is
//!   exact), and the VTOC slots are distinct;
//! * `qspacelist` of every queue space shows the model's extents and file;
//! * a request the model says cannot be served (no run large enough, fewer than 4 pages, no
//!   such queue space) is refused with the right diagnostic, names the largest free run, and
//!   changes nothing.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use qm_common::device::{FreeRun, UDL_PAGES, VTOC_PAGES, VtocEntry};
use qm_common::protocol::{
    ClientKind, DaemonRequest, DeviceRequest, Progress, QueueSpaceRequest, Reply, Request,
};
use qm_common::qspace::{MemorySize, QueueSpaceParams};
use qm_common::{Diagnostic, QmResult};
use qm_daemon::admin::{self, Ctx};
use qm_daemon::state::Daemon;
use std::path::{Path, PathBuf};

/// Which file a UDL entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Device,
    Other,
}

/// An entry after entry 0: its file, first page and size.
#[derive(Debug, Clone)]
struct Extra {
    file: File,
    start: u64,
    size: u64,
}

#[derive(Debug, Clone)]
struct Layout {
    /// Size of entry 0 (the device file from page 0; the VTOC and UDL take 35 pages).
    entry0: u64,
    extras: Vec<Extra>,
}

/// Entry 0, one entry on another file and possibly one more on the device file, placed
/// after entry 0 with a gap; the extra entries come in either order.
fn layouts() -> impl Strategy<Value = Layout> {
    (40u64..300, 0u64..40, 20u64..300, prop::option::of((0u64..30, 20u64..200)), any::<bool>())
        .prop_map(|(free0, other_start, other_size, device_extra, device_first)| {
            let entry0 = VTOC_PAGES + UDL_PAGES + free0;
            let other = Extra { file: File::Other, start: other_start, size: other_size };
            let mut extras = vec![other];
            if let Some((gap, size)) = device_extra {
                let extra = Extra { file: File::Device, start: entry0 + gap, size };
                if device_first {
                    extras.insert(0, extra);
                } else {
                    extras.push(extra);
                }
            }
            Layout { entry0, extras }
        })
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        pages: u64,
    },
    /// Adds to the live queue space `space % live` (or to one that does not exist).
    AddExtent {
        space: usize,
        pages: u64,
    },
    Destroy {
        space: usize,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (4u64..200).prop_map(|pages| Op::Create { pages }),
            2 => (any::<usize>(), 1u64..120).prop_map(|(space, pages)| Op::AddExtent { space, pages }),
            1 => any::<usize>().prop_map(|space| Op::Destroy { space }),
        ],
        1..40,
    )
}

/// One UDL entry of the model: a page bitmap.
#[derive(Debug, Clone)]
struct ModelEntry {
    index: u8,
    file: File,
    start: u64,
    used: Vec<bool>,
}

impl ModelEntry {
    fn free_runs(&self) -> Vec<FreeRun> {
        let mut runs = Vec::new();
        let mut p = 0;
        while p < self.used.len() {
            if self.used[p] {
                p += 1;
                continue;
            }
            let from = p;
            while p < self.used.len() && !self.used[p] {
                p += 1;
            }
            runs.push(FreeRun { addr: self.start + from as u64, size: (p - from) as u64 });
        }
        runs
    }

    /// The lowest page where `pages` free pages start.
    fn first_fit(&self, pages: u64) -> Option<u64> {
        let n = pages as usize;
        (0..=self.used.len().checked_sub(n)?)
            .find(|&p| self.used[p..p + n].iter().all(|u| !u))
            .map(|p| self.start + p as u64)
    }

    fn mark(&mut self, offset: u64, pages: u64, used: bool) {
        let from = (offset - self.start) as usize;
        for slot in &mut self.used[from..from + pages as usize] {
            assert_ne!(*slot, used, "model: page marked twice");
            *slot = used;
        }
    }
}

/// An extent in the model: (entry index, offset, pages).
type Extent = (u8, u64, u64);

#[derive(Debug, Clone)]
struct Space {
    name: String,
    file: File,
    extents: Vec<Extent>,
}

/// What qm should do, computed without qm's code.
#[derive(Debug)]
struct Model {
    entries: Vec<ModelEntry>,
    spaces: Vec<Space>,
}

/// What the model expects of a request.
#[derive(Debug, PartialEq)]
enum Expect {
    Done,
    /// Refused for lack of room; the largest free run among the entries considered.
    NoRoom(u64),
    Refused(Diagnostic),
}

impl Model {
    fn new(layout: &Layout) -> Model {
        let mut entries = vec![ModelEntry {
            index: 0,
            file: File::Device,
            start: 0,
            used: vec![false; layout.entry0 as usize],
        }];
        entries[0].mark(0, VTOC_PAGES + UDL_PAGES, true);
        for (i, extra) in layout.extras.iter().enumerate() {
            entries.push(ModelEntry {
                index: i as u8 + 1,
                file: extra.file,
                start: extra.start,
                used: vec![false; extra.size as usize],
            });
        }
        Model { entries, spaces: Vec::new() }
    }

    fn largest_run<'a>(entries: impl Iterator<Item = &'a ModelEntry>) -> u64 {
        entries.flat_map(ModelEntry::free_runs).map(|r| r.size).max().unwrap_or(0)
    }

    /// First fit over `entries` in index order.
    fn fit<'a>(
        entries: impl Iterator<Item = &'a mut ModelEntry>,
        pages: u64,
    ) -> Option<&'a mut ModelEntry> {
        let mut sorted: Vec<&'a mut ModelEntry> = entries.collect();
        sorted.sort_by_key(|e| e.index);
        sorted.into_iter().find(|e| e.first_fit(pages).is_some())
    }

    fn create(&mut self, name: &str, pages: u64) -> Expect {
        let pages = pages / 4 * 4;
        let Some(entry) = Self::fit(self.entries.iter_mut(), pages) else {
            return Expect::NoRoom(Self::largest_run(self.entries.iter()));
        };
        let offset = entry.first_fit(pages).expect("fits");
        entry.mark(offset, pages, true);
        let (index, file) = (entry.index, entry.file);
        self.spaces.push(Space { name: name.into(), file, extents: vec![(index, offset, pages)] });
        Expect::Done
    }

    fn add_extent(&mut self, space: usize, pages: u64) -> Expect {
        if self.spaces.is_empty() {
            return Expect::Refused(Diagnostic::NotFound);
        }
        let pages = pages / 4 * 4;
        if pages == 0 {
            return Expect::Refused(Diagnostic::Inval);
        }
        let i = space % self.spaces.len();
        let file = self.spaces[i].file;
        let on_file = || self.entries.iter().filter(|e| e.file == file);
        let largest = Self::largest_run(on_file());
        let Some(entry) = Self::fit(self.entries.iter_mut().filter(|e| e.file == file), pages)
        else {
            return Expect::NoRoom(largest);
        };
        let offset = entry.first_fit(pages).expect("fits");
        entry.mark(offset, pages, true);
        self.spaces[i].extents.push((entry.index, offset, pages));
        Expect::Done
    }

    fn destroy(&mut self, space: usize) -> Expect {
        if self.spaces.is_empty() {
            return Expect::Refused(Diagnostic::NotFound);
        }
        let gone = self.spaces.remove(space % self.spaces.len());
        for (index, offset, pages) in gone.extents {
            let entry = self.entries.iter_mut().find(|e| e.index == index).expect("entry");
            entry.mark(offset, pages, false);
        }
        Expect::Done
    }

    /// The queue-space extents of the VTOC: (name, extent number, entry, offset, pages).
    fn extents(&self) -> Vec<(String, u32, u8, u64, u64)> {
        let mut list: Vec<_> = self
            .spaces
            .iter()
            .flat_map(|s| {
                s.extents.iter().enumerate().map(|(n, &(entry, offset, pages))| {
                    (s.name.clone(), n as u32, entry, offset, pages)
                })
            })
            .collect();
        list.sort();
        list
    }
}

/// The device as the admin requests show it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Each entry's index and free-space map (`lidl`).
    free: Vec<(u8, Vec<FreeRun>)>,
    /// The VTOC in slot order (`livtoc`).
    vtoc: Vec<VtocEntry>,
    /// The queue spaces that exist, by name.
    spaces: Vec<String>,
}

/// A daemon on a device in a temporary directory, and one admin session.
struct Rig {
    _dir: tempfile::TempDir,
    daemon: std::sync::Arc<Daemon>,
    session: u64,
    device: PathBuf,
    other: PathBuf,
}

impl Rig {
    fn new(layout: &Layout) -> Rig {
        let dir = tempfile::Builder::new().prefix("qm-freemap-").tempdir().expect("temp dir");
        let device = dir.path().join("QUE");
        let other = dir.path().join("OTHER");
        let daemon = std::sync::Arc::new(Daemon::new(device.clone(), dir.path().join("QUE.sock")));
        let uid = rustix::process::geteuid().as_raw();
        let principal = qm_common::principal::Principal::unix(uid);
        let face = qm_common::principal::Face::Socket;
        let session = daemon.sessions.register(
            None,
            principal,
            face,
            "proptest".into(),
            ClientKind::Admin,
            0,
        );
        let rig = Rig { _dir: dir, daemon, session, device, other };
        rig.crdl(&rig.device, 0, layout.entry0);
        for extra in &layout.extras {
            let file = match extra.file {
                File::Device => &rig.device,
                File::Other => &rig.other,
            };
            rig.crdl(file, extra.start, extra.size);
        }
        rig
    }

    fn call(&self, request: Request) -> QmResult<Reply> {
        let progress = |_: Progress| {};
        let mut ctx = Ctx::new(&self.daemon, self.session, &progress);
        admin::handle(&mut ctx, request)
    }

    fn crdl(&self, file: &Path, offset: u64, size: u64) {
        let device = file.display().to_string();
        let request =
            Request::Device(DeviceRequest::Create { device, offset, size, page_size: None });
        self.call(request).unwrap_or_else(|e| panic!("crdl {}: {e}", file.display()));
    }

    fn file_name(&self, file: File) -> String {
        match file {
            File::Device => self.device.display().to_string(),
            File::Other => self.other.display().to_string(),
        }
    }

    /// What `lidl` and `livtoc` show, and the queue spaces that exist.
    fn snapshot(&self) -> Snapshot {
        let Ok(Reply::Device(listing)) =
            self.call(Request::Device(DeviceRequest::List { index: None }))
        else {
            panic!("lidl failed");
        };
        let free = listing.entries.into_iter().map(|e| (e.entry.index, e.free)).collect();
        let Ok(Reply::Vtoc(mut vtoc)) = self.call(Request::Device(DeviceRequest::Vtoc)) else {
            panic!("livtoc failed");
        };
        vtoc.sort_by_key(|t| t.index);
        let Ok(Reply::Names(names)) = self.call(Request::Daemon(DaemonRequest::Names)) else {
            panic!("names failed");
        };
        let mut spaces = names.qspaces;
        spaces.sort();
        Snapshot { free, vtoc, spaces }
    }

    /// Checks the device against the model.
    fn check(&self, model: &Model) -> Result<(), TestCaseError> {
        let Snapshot { free, vtoc, spaces } = self.snapshot();
        let expected: Vec<(u8, Vec<FreeRun>)> =
            model.entries.iter().map(|e| (e.index, e.free_runs())).collect();
        prop_assert_eq!(free, expected, "free-space maps (lidl)");

        let mut extents: Vec<_> = vtoc
            .iter()
            .filter_map(|t| t.extent.map(|n| (t.name.clone(), n, t.device, t.offset, t.pages)))
            .collect();
        extents.sort();
        prop_assert_eq!(extents, model.extents(), "queue-space extents (livtoc)");
        let tables: Vec<_> = vtoc.iter().filter(|t| t.extent.is_none()).collect();
        prop_assert_eq!(tables.len(), 2, "the VTOC and UDL tables stay");
        let mut slots: Vec<u8> = vtoc.iter().map(|t| t.index).collect();
        slots.dedup();
        prop_assert_eq!(slots.len(), vtoc.len(), "VTOC slots are distinct");

        let mut names: Vec<String> = model.spaces.iter().map(|s| s.name.clone()).collect();
        names.sort();
        prop_assert_eq!(spaces, names, "queue spaces");
        for space in &model.spaces {
            let request =
                Request::QueueSpace(QueueSpaceRequest::List { name: Some(space.name.clone()) });
            let Ok(Reply::QueueSpace(info)) = self.call(request) else {
                return Err(TestCaseError::fail(format!("qspacelist {} failed", space.name)));
            };
            let shown: Vec<Extent> =
                info.extents.iter().map(|t| (t.device, t.offset, t.pages)).collect();
            prop_assert_eq!(&shown, &space.extents, "extents of {} (qspacelist)", &space.name);
            prop_assert_eq!(info.total_pages, space.extents.iter().map(|e| e.2).sum::<u64>());
            prop_assert_eq!(&info.file, &self.file_name(space.file), "file of {}", &space.name);
        }
        Ok(())
    }
}

fn params(name: &str, ipc_key: u32, pages: u64) -> QueueSpaceParams {
    QueueSpaceParams {
        name: name.into(),
        ipc_key,
        pages,
        queues: 1,
        transactions: 4,
        processes: 4,
        messages: 100,
        error_queue: String::new(),
        initialize: false,
        blocking: 16,
        nonpersistent: MemorySize::ZERO,
        actions: 0,
        overflow: 0,
    }
}

fn run(layout: Layout, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rig = Rig::new(&layout);
    let mut model = Model::new(&layout);
    rig.check(&model)?;
    let mut created = 0u32;
    for (step, op) in ops.into_iter().enumerate() {
        let live = |m: &Model, space: usize| -> String {
            if m.spaces.is_empty() {
                "NOSUCH".into()
            } else {
                m.spaces[space % m.spaces.len()].name.clone()
            }
        };
        let before = rig.snapshot();
        let (request, expect) = match op {
            Op::Create { pages } => {
                created += 1;
                let name = format!("QS{created}");
                let request = QueueSpaceRequest::Create(params(&name, 32768 + created, pages));
                (request, model.create(&name, pages))
            }
            Op::AddExtent { space, pages } => {
                let name = live(&model, space);
                (QueueSpaceRequest::AddExtent { name, pages }, model.add_extent(space, pages))
            }
            Op::Destroy { space } => {
                let name = live(&model, space);
                (QueueSpaceRequest::Destroy { name, force: true }, model.destroy(space))
            }
        };
        let shown = format!("step {step}: {request:?}");
        let result = rig.call(Request::QueueSpace(request));
        match (&expect, &result) {
            (Expect::Done, Ok(_)) => {}
            (Expect::NoRoom(largest), Err(e)) => {
                prop_assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}: {}", &shown, &e.message);
                prop_assert!(
                    e.message.contains("the largest free run ")
                        && e.message.ends_with(&format!(
                            " is {}",
                            qm_common::plural::count(*largest, "page", "pages")
                        )),
                    "{}: expected the largest free run to be {}: {}",
                    &shown,
                    largest,
                    &e.message
                );
            }
            (Expect::Refused(diagnostic), Err(e)) => {
                prop_assert_eq!(e.diagnostic, *diagnostic, "{}: {}", &shown, &e.message);
            }
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{shown}: the model expects {expect:?}, qm answered {result:?}"
                )));
            }
        }
        if result.is_err() {
            prop_assert_eq!(
                &rig.snapshot(),
                &before,
                "{}: a refused request changed the device",
                &shown
            );
        }
        rig.check(&model).map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any sequence of create, addext and destroy, free-space maps, the VTOC and
    /// every queue space's extents are exactly what first fit over a page bitmap gives.
    #[test]
    fn free_maps_are_exact_on_a_real_device(layout in layouts(), ops in ops()) {
        run(layout, ops)?;
    }
}
