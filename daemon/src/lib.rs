//! qmd, the qm daemon: it owns a device (a redb database) and serves `qmadmin` and
//! applications over a Unix control socket that only its owner may use.
//!
//! # Layout
//! * [`server`]: start-up (lock, socket, detaching) and the accept loop.
//! * [`session`]: one connection: greeting, peer check, request loop.
//! * [`admin`]: the admin requests, one module per command family.
//! * [`data`]: the data-plane requests (enqueue, dequeue, transactions, message admin).
//! * [`engine`]: the queue engine of a loaded queue space, with its group-commit writer.
//! * [`state`]: what the daemon's tasks share: the device, loaded queue spaces, sessions.
//! * [`registry`]: sessions and the queue spaces they have open.
//! * [`rights`]: who may do what: the check every request passes.
//! * [`storage`]: redb files, records, free-space maps.
//! * [`threshold`], [`forwarder`], [`service`], [`command`]: capacity-threshold commands,
//!   forwarders (TMQFORWARD) and the services they call, running external commands.
//! * [`workers`]: services that stay up (`mode = "worker"`), their pools and protocol.
//! * [`http`]: the HTTP face (`-w`): messages over HTTP, `/metrics`, `/healthz`.
//! * [`options`], [`logging`], [`detach`]: the command line, logs, background start.

pub mod admin;
pub mod backup;
pub mod command;
pub mod data;
pub mod detach;
pub mod engine;
pub mod forwarder;
pub mod http;
pub mod logging;
pub mod net;
pub mod options;
pub mod registry;
pub mod rights;
pub mod server;
pub mod service;
pub mod session;
pub mod state;
pub mod storage;
pub mod threshold;
pub mod timings;
pub mod tls;
pub mod verify;
pub mod workers;
