//! The daemon's shared state: the device it serves, what is loaded, and the sessions.
//!
//! The device path is fixed for the daemon's life, but the file behind it is not: scripts
//! remove the device and create a new one. Before every admin request (and every second in
//! the background) the daemon checks that the path still names the file it opened; if not,
//! it lets go of everything and starts over with whatever the path names now.

use crate::registry::Registry;
use crate::storage::Device;
use crate::storage::records::now_secs;
use qm_common::QmResult;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// A queue space loaded in the daemon: its in-memory state lives here until `ipcrm`, a
/// command that needs it inactive, or a restart.
#[derive(Debug)]
pub struct LoadedSpace {
    pub since: u64,
}

/// The device and everything that depends on it.
pub struct Store {
    /// `None` while no device file exists at the path.
    pub device: Option<Device>,
    /// Bumped whenever the device is let go; attachments of older generations are void.
    pub generation: u64,
    pub loaded: BTreeMap<String, LoadedSpace>,
    /// Why the file at the path could not be opened, if it could not.
    pub open_error: Option<String>,
}

impl Store {
    /// Lets go of the device and everything loaded from it.
    pub fn release(&mut self) {
        self.device = None;
        self.loaded.clear();
        self.generation += 1;
    }

    /// Makes sure the store serves the file the device path names right now.
    pub fn refresh(&mut self, path: &std::path::Path) {
        if let Some(device) = &self.device {
            if device.is_current() {
                return;
            }
            tracing::warn!(device = %path.display(), "device file was removed or replaced; releasing it");
            self.release();
        }
        self.open_error = None;
        if path.exists() {
            match Device::open(path) {
                Ok(device) => {
                    tracing::info!(device = %path.display(), "device opened");
                    self.device = Some(device);
                }
                Err(e) => self.open_error = Some(e.message),
            }
        }
    }

    /// Loads a queue space's in-memory state if it is not loaded yet.
    pub fn load(&mut self, name: &str) -> QmResult<()> {
        self.loaded.entry(name.to_string()).or_insert_with(|| LoadedSpace { since: now_secs() });
        Ok(())
    }
}

/// Everything the daemon's tasks share.
pub struct Daemon {
    pub device_path: PathBuf,
    pub socket_path: PathBuf,
    pub started: u64,
    store: Mutex<Store>,
    pub sessions: Registry,
    shutdown: watch::Sender<bool>,
}

impl Daemon {
    pub fn new(device_path: PathBuf, socket_path: PathBuf) -> Daemon {
        let mut store =
            Store { device: None, generation: 1, loaded: BTreeMap::new(), open_error: None };
        store.refresh(&device_path);
        Daemon {
            device_path,
            socket_path,
            started: now_secs(),
            store: Mutex::new(store),
            sessions: Registry::default(),
            shutdown: watch::channel(false).0,
        }
    }

    /// The store, refreshed against the device path.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.refresh(&self.device_path);
        store
    }

    /// Why the daemon cannot serve its device right now, if it cannot.
    pub fn startup_problem(&self) -> Option<String> {
        self.store().open_error.clone()
    }

    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
