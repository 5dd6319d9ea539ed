//! End-to-end tests: a real `qmd` on a temporary device, driven by `qmadmin` scripts.

mod support;
// Throwaway Unix users (useradd/userdel) for tests that need a second user.
mod users;

// The universal device list: crdl, lidl, dsdl, livtoc, chdl, other files.
mod device;
// Tuxedo-style scripts: here-documents with prompt answers, positional one-liners, pipes.
mod scripts;
// The interactive shell on a pty: prompt, completion, history, <CR> repeat, prompting, hints.
mod pty;
// Bad input: clear errors naming the field and range, nothing changed, scripts go on.
mod bad_input;
// Queue space lifecycle: create, first-fit placement, list, change, qaddext, destroy, VTOC.
mod qspace;
// Queue spaces on another file: placement, dsdl refusals, chdl after moving the file.
mod placement;
// Attached sessions: ipcs, commands that need a space inactive, ipcrm -f.
mod attach;
// The daemon: one per device, restarts, auto-start, deleted device, bad frames, peer uid.
mod daemon;
// Line grammar and session: comments, shell escapes, echo, -c, exit status, help, confirmations.
mod grammar;
// Queues of the open queue space: qcreate defaults, qchange, qdestroy, qinfo, error queue.
mod queue;
// Queue attributes: maximum length and waiting enqueues, size, switches, persistence, idle expiry.
mod attrs;
// Failover: a standby taking over under load, fencing, clients with several addresses.
mod failover;
// Several queue managers: the profile, priority routing, full names, qmadmin managers.
mod managers;
// Crash safety: SIGKILL during concurrent traffic loses and duplicates nothing.
mod crash;
// Storage faults: crdl, qdestroy -p, qspacedestroy -f crashed at every step; refused files unchanged.
mod faults;
// Power cuts: unsynced writes lost at points spread over concurrent traffic and admin work.
mod powercut;
// Body segments beside a redb file: stored, read back, removed, checked.
mod bodies;
// The write-ahead journal: trust, generations, replay.
mod journal;
// Messages stored in order on disk: what a restart brings back, and older queue spaces.
mod depth;
// Data-plane fixtures: a queue space with queues, a synchronous application client, qlist/qinfo parsed.
mod app;
// Every TPQCTL field through enqueue and dequeue (client and qmadmin), placement, msgids.
mod enqueue;
// Queue order: every sort key with fifo/lifo, multi-key orders, the ten-message starvation rule.
mod order;
// Transactions: visibility, locks, durability, time-outs, disconnects, qprinttrans/qcommittrans/qaborttrans, limits.
mod transactions;
// Retries: delay, retry counts, the error queue with its origin, qchangequeue back, dropping.
mod retries;
// Expiry: removal without dequeue, reclaimed capacity, never dequeued, qchangeexp.
mod expiry;
// Capacity: blocks, message slots, non-persistent memory (full and none), oversized bodies.
mod capacity;
// Non-persistent messages: survive qclose, lost at ipcrm, qaddext, qspacechange and restart.
mod nonpersistent;
// Message administration: qset, qscan, qlist, qdeletemsg, qchangeprio/time/exp/queue, held messages.
mod msgadmin;
// Bad input to the data plane: clear errors, nothing changed (qmadmin and client).
mod data_bad_input;
// Automation fixtures: a queue space with queues, a client, fired.txt, qthlog and psr parsed.
mod auto;
// Capacity thresholds: every unit and set, once per crossing, restarts, environment, time limit, qthlog/qthtest.
mod thresholds;
// Forwarders: replies, retries, -d, -e re-booted by a threshold, time-outs, boot/shutdown, no loss.
mod forwarders;
// Services that stay up: worker processes, deadlines, recycling, protocol errors, no orphans.
mod workers;
// The configuration file: CLOPT and fields, --config and DEVICE.toml, boot = true, daemon reload, errors.
mod config;
// qwhy: each reason a message is not moving, next in line, unknown msgids.
mod qwhy;
// Trust: other users' daemons, the private socket directory, configurations, lock/log links.
mod security;
// Principals and rights: qgrant/qrevoke/qauth/whoami, each right on another local user, --socket-mode.
mod rights;
// Starting and reaching qmd: --socket and QM_SOCKET, --detach and DEVICE.log, SIGINT.
mod startup;
// A queue space's limits on concurrent processes and waiting dequeues.
mod limits;
// Random frames to qmd and random lines to qmadmin (seeded); the fixes fuzzing led to.
mod fuzz_wire;
// The daemon under pressure: no file descriptors left, long initializations, half frames, orphans.
mod runtime;
// Disk full: QMENOSPACE naming the filesystem, nothing changed, writing again once there is room; the disk a space takes; clean stops.
mod diskfull;
// The network face: TCP and TLS listeners, mqserver's options, client certificates, reload.
mod network;
// The HTTP face: enqueue/dequeue with a real HTTP client, waits, errors, MAXCONN, /metrics, /healthz.
mod http;
// Manual pages and shell completions generated from the programs' options.
mod docs;
// qstat: the live view of a queue space.
mod qstat;
// qverify and qmd --verify: checking a device.
mod verify;
// qbackup and qrestore: online backup, restore, the offline way.
mod backup;
// qexport and qimport: the portable stream.
mod export;
// High availability: the OCF resource agent (dist/ocf/qm) on real daemons, the systemd units.
mod ha_agent;
