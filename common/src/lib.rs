//! The shared vocabulary of qm: what the daemon `qmd`, the shell `qmadmin` and applications
//! agree on. It holds no policy; the daemon decides, this crate only names things.
//!
//! # Layout
//! * [`error`]: [`QmError`](error::QmError), a Tuxedo `QME*` diagnostic plus a sentence.
//! * [`names`]: names of devices, queue spaces and queues, and their limits.
//! * [`device`]: the universal device list, the VTOC and free space.
//! * [`qspace`]: queue-space parameters and reports.
//! * [`queue`]: queue definitions and reports.
//! * [`order`]: queue order and out-of-order enqueuing.
//! * [`threshold`]: capacity limits and their command.
//! * [`protocol`]: requests and responses; [`frame`]: how they travel as bytes.
//! * [`client`]: a connection to the daemon.
//! * [`paths`]: socket, lock, log and configuration paths derived from a device path.
//! * [`plural`]: counts with the right noun in messages.
//! * [`principal`], [`rights`]: who a session speaks for, and what it may do where.
//! * [`trust`]: which daemons, files and directories qm accepts, and how it opens its files.
//! * [`why`]: why a message is not moving (`qwhy`).
//! * [`worker`]: the protocol of long-running services and a helper to write them.

pub mod address;
pub mod backup;
pub mod client;
pub mod config;
pub mod device;
pub mod error;
pub mod export;
pub mod failover;
pub mod frame;
pub mod lockfile;
pub mod managers;
pub mod message;
pub mod names;
pub mod order;
pub mod paths;
pub mod plural;
pub mod principal;
pub mod profile;
pub mod protocol;
pub mod qspace;
pub mod queue;
pub mod rights;
pub mod threshold;
pub mod trust;
pub mod unix_stream;
pub mod verify;
pub mod why;
pub mod worker;

pub use error::{Diagnostic, QmError, QmResult};
pub mod stat;
pub mod time;
pub mod tls;
