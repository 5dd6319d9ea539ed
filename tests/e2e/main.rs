//! End-to-end tests: a real `qmd` on a temporary device, driven by `qmadmin` scripts.

mod support;

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
// Crash safety: SIGKILL during concurrent traffic loses and duplicates nothing.
mod crash;
