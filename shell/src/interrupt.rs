//! Ctrl-C at a terminal while a command runs ends that command, not qmadmin, as BREAK does
//! in Tuxedo. At the prompt rustyline reads Ctrl-C as a key; while a command runs the
//! terminal sends SIGINT, which this module's handler only notes. A shell escape's command
//! gets SIGINT itself (it shares the terminal) and ends; a dequeue waiting for a message is
//! given up (see [`crate::shell::Shell`]); other requests are short and run to their end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by the SIGINT handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How often a waiting request looks at the flag: quick enough for a person.
const LOOK_EVERY: Duration = Duration::from_millis(50);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    // Storing to an atomic is async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT from now on. Only for a session at a terminal: a script interrupted with
/// Ctrl-C ends, as any filter does.
pub fn catch() {
    // SAFETY: the handler only stores to an atomic. Child processes get SIGINT's default
    // action back at exec, since a caught signal does not survive it.
    unsafe {
        libc::signal(libc::SIGINT, note_interrupt as *const () as libc::sighandler_t);
    }
}

/// Forgets a Ctrl-C typed before now (during a shell escape, say).
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Completes when Ctrl-C is typed after the last [`clear`].
pub async fn typed() {
    while !INTERRUPTED.swap(false, Ordering::SeqCst) {
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
