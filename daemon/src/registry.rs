//! Sessions and what they have open.
//!
//! Every connection is a session. A session attaches to at most one queue space at a time
//! (`qopen`); a queue space with attached sessions is *active*. Attachments carry the device
//! generation they were made in, so a device that was deleted or replaced detaches everyone.

use qm_common::principal::{Face, Principal};
use qm_common::protocol::ClientKind;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A queue space a session has open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSpace {
    pub name: String,
    pub generation: u64,
    pub since: u64,
}

/// What the daemon knows about a session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub id: u64,
    pub pid: Option<u32>,
    /// Who it speaks for, and how it came.
    pub principal: Principal,
    pub face: Face,
    pub program: String,
    pub kind: ClientKind,
    pub since: u64,
    pub open: Option<OpenSpace>,
}

impl SessionEntry {
    /// A short description for messages such as "attached: qmadmin (pid 42)".
    pub fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("{} pid {} (session {})", self.program, pid, self.id),
            None => format!("{} (session {})", self.program, self.id),
        }
    }
}

/// All live sessions.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        &self,
        pid: Option<u32>,
        principal: Principal,
        face: Face,
        program: String,
        kind: ClientKind,
        now: u64,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry =
            SessionEntry { id, pid, principal, face, program, kind, since: now, open: None };
        if self.lock().insert(id, entry).is_none() {
            crate::engine::writer::session_opened();
        }
        id
    }

    pub fn unregister(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            crate::engine::writer::session_closed();
        }
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// What the daemon knows about session `id`.
    pub fn get(&self, id: u64) -> Option<SessionEntry> {
        self.lock().get(&id).cloned()
    }

    /// The name of the queue space `id` has open, of whatever device generation (a request
    /// on one of an earlier generation is refused by its handler).
    pub fn open_name(&self, id: u64) -> Option<String> {
        self.lock().get(&id)?.open.as_ref().map(|o| o.name.clone())
    }

    /// The queue space `id` has open in the current device generation.
    pub fn open_of(&self, id: u64, generation: u64) -> Option<String> {
        let sessions = self.lock();
        let open = sessions.get(&id)?.open.as_ref()?;
        (open.generation == generation).then(|| open.name.clone())
    }

    /// The queue space `id` had open in an earlier device generation (the device file was
    /// removed or replaced since).
    pub fn stale_open_of(&self, id: u64, generation: u64) -> Option<String> {
        let sessions = self.lock();
        let open = sessions.get(&id)?.open.as_ref()?;
        (open.generation != generation).then(|| open.name.clone())
    }

    pub fn set_open(&self, id: u64, open: Option<OpenSpace>) {
        if let Some(s) = self.lock().get_mut(&id) {
            s.open = open;
        }
    }

    /// Sessions attached to `name` in `generation`, other than `except`.
    pub fn attached(&self, name: &str, generation: u64, except: Option<u64>) -> Vec<SessionEntry> {
        let mut list: Vec<SessionEntry> = self
            .lock()
            .values()
            .filter(|s| Some(s.id) != except)
            .filter(|s| {
                s.open.as_ref().is_some_and(|o| o.name == name && o.generation == generation)
            })
            .cloned()
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Detaches every session from `name`.
    pub fn detach_all(&self, name: &str) {
        for s in self.lock().values_mut() {
            if s.open.as_ref().is_some_and(|o| o.name == name) {
                s.open = None;
            }
        }
    }
}

/// "qmadmin pid 1 (session 1), client pid 2 (session 3)".
pub fn describe_all(sessions: &[SessionEntry]) -> String {
    sessions.iter().map(SessionEntry::describe).collect::<Vec<_>>().join(", ")
}
