//! The applier's place among the threads that want a processor: behind all of them
//! (Linux's `SCHED_IDLE`), except while some thread waits for its commit.
//!
//! At a deep queue every message reaches redb, and the applier's B-tree work takes about a
//! fifth of a core. The requests themselves leave processors idle a fifth of the time
//! (each group waits for its sync, then wakes its sessions all at once), so that work fits
//! in the gaps; run as an equal, it delayed the sessions instead. In the background, 64
//! clients made 4–13 % more pairs at 1,000,000 queued and 13 % more at 10,000,000
//! (`BENCHMARKS.md`, "Where the time goes, thread by thread; the applier in the
//! background").
//!
//! Nothing may wait behind a thread the scheduler starves, though: a machine busy with
//! other work would otherwise hold checkpoints back indefinitely, and the writer with them
//! once a journal region is full. So whoever waits for the applier's commit
//! ([`super::applier::Applying::wait`]) raises it back to the normal policy for as long as
//! it waits, and the applier lowers itself again only when nobody waits (both under one
//! lock, so a raise is never undone by a lowering that read the count before it).
//! Copying bodies forward ([`super::segments::compact`]) runs at the normal policy: it is
//! rare, and it gives disk room back.
//!
//! An unprivileged thread may lower itself but not come back (sched(7): leaving
//! `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` allowing the thread's nice
//! value). So qmd first tries both on a thread of its own, and where it cannot come back
//! the applier is never lowered. `QM_APPLIER_BACKGROUND=0` keeps it at the normal policy.

use std::sync::{Mutex, OnceLock};

/// One applier thread's policy, and who waits for it.
#[derive(Debug, Default)]
pub struct Background {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The applier's thread id while it runs.
    tid: Option<libc::pid_t>,
    /// Threads waiting for one of its commits.
    waiting: usize,
    /// Whether it is in the background now.
    lowered: bool,
}

/// Held while a thread waits for the applier: it runs at the normal policy meanwhile.
pub struct Waiting<'b> {
    background: &'b Background,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.background.lock().waiting -= 1;
    }
}

impl Background {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called on the applier's thread when it starts: that thread is the one to move.
    /// Whether it may is decided (and, where it may not, said in the log) now, not at its
    /// first idle moment, which a daemon stopped soon after it started may never reach.
    pub fn enter(&self) {
        allowed();
        self.lock().tid = Some(current_tid());
    }

    /// Called on the applier's thread when it ends: nothing is to be moved any more (its
    /// id may be another thread's next).
    pub fn leave(&self) {
        let mut state = self.lock();
        state.tid = None;
        state.lowered = false;
    }

    /// Called on the applier's thread between pieces of work: it goes to the background
    /// unless someone waits for it, where qmd may come back from there.
    pub fn lower(&self) {
        let mut state = self.lock();
        if state.waiting > 0 || state.lowered || !allowed() || state.tid != Some(current_tid()) {
            return;
        }
        state.lowered = set_policy(0, libc::SCHED_IDLE);
    }

    /// Called on the applier's thread before work nobody waits for but that should not
    /// wait behind others either (copying bodies forward, which gives disk room back).
    pub fn restore(&self) {
        let mut state = self.lock();
        if state.lowered && state.tid == Some(current_tid()) {
            state.lowered = !set_policy(0, libc::SCHED_OTHER);
        }
    }

    /// Raises the applier to the normal policy until the guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        let mut state = self.lock();
        state.waiting += 1;
        if let (true, Some(tid)) = (state.lowered, state.tid) {
            if set_policy(tid, libc::SCHED_OTHER) {
                state.lowered = false;
            } else {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    let e = std::io::Error::last_os_error();
                    tracing::warn!("the applier could not leave the background ({e})");
                });
            }
        }
        Waiting { background: self }
    }
}

fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sets the scheduling policy of thread `tid` (0: the calling one); whether it was set.
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the policies used here (priority 0).
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// Whether appliers go to the background: not turned off, and a thread of this process
/// can both go there and come back (tried once, on a thread of its own).
fn allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        let off = "appliers at the normal policy";
        if !crate::options::env_switch("QM_APPLIER_BACKGROUND", off, "in the background") {
            return false;
        }
        let tried = std::thread::Builder::new()
            .name("qm-sched-probe".into())
            .spawn(|| set_policy(0, libc::SCHED_IDLE) && set_policy(0, libc::SCHED_OTHER));
        let allowed = tried.ok().and_then(|t| t.join().ok()).unwrap_or(false);
        if !allowed {
            tracing::info!(
                "appliers run at the normal policy: this process may not bring a thread back \
                 from SCHED_IDLE (CAP_SYS_NICE or RLIMIT_NICE needed)"
            );
        }
        allowed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: sched_getscheduler has no memory preconditions.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// A thread standing in for the applier: on each message it lowers itself (true) or
    /// restores itself (false), then reports its policy.
    fn applier(background: Arc<Background>) -> (mpsc::Sender<bool>, mpsc::Receiver<libc::c_int>) {
        let (go, steps) = mpsc::channel::<bool>();
        let (report, reports) = mpsc::channel();
        std::thread::spawn(move || {
            background.enter();
            for lower in steps {
                if lower {
                    background.lower();
                } else {
                    background.restore();
                }
                report.send(policy(0)).expect("test listens");
            }
            background.leave();
        });
        (go, reports)
    }

    #[test]
    fn a_waiter_brings_the_applier_back_and_it_stays_until_nobody_waits() {
        let background = Arc::new(Background::default());
        let (go, reports) = applier(background.clone());
        let lowered = if allowed() { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
        go.send(true).unwrap();
        assert_eq!(reports.recv().unwrap(), lowered, "nobody waits: in the background");

        let first = background.waiting();
        let tid = background.lock().tid.expect("the applier entered");
        assert_eq!(policy(tid), libc::SCHED_OTHER, "a waiter raises it at once");
        let second = background.waiting();
        go.send(true).unwrap();
        assert_eq!(reports.recv().unwrap(), libc::SCHED_OTHER, "it may not lower itself now");
        drop(first);
        go.send(true).unwrap();
        assert_eq!(reports.recv().unwrap(), libc::SCHED_OTHER, "one still waits");
        drop(second);
        go.send(true).unwrap();
        assert_eq!(reports.recv().unwrap(), lowered, "nobody waits any more");
        go.send(false).unwrap();
        assert_eq!(reports.recv().unwrap(), libc::SCHED_OTHER, "restored for a compaction");
        drop(go);
    }

    #[test]
    fn only_the_applier_thread_lowers_itself() {
        let background = Background::default();
        background.enter();
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                background.lower();
                policy(0)
            })
            .join()
            .unwrap()
        });
        assert_eq!(other, libc::SCHED_OTHER, "another thread calling lower stays where it is");
        background.leave();
        background.lower();
        assert_eq!(policy(0), libc::SCHED_OTHER, "after leave, nothing moves");
    }
}
