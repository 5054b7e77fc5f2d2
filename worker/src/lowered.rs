//! Threads that run below the events' priority (the dashboard's), and the one thing they must
//! never do: create a thread that processes events.
//!
//! Why a module of its own: on Linux a new thread inherits its creator's scheduling class, and an
//! unprivileged thread cannot leave the idle class again (the kernel treats `SCHED_IDLE` as nice
//! 20 and refuses the way back without `CAP_SYS_NICE`). Tokio's blocking pool creates its threads
//! on demand, from whichever thread hands it work while none is free. So a sled read asked for by
//! a dashboard thread could create one of the event runtime's blocking threads in the idle class,
//! and that thread then ran event-path sled transactions for as long as it lived: starved on a
//! busy core while holding sled's lock. The state backend asks [`this_thread_is_lowered`] and, on
//! such a thread, hands the work to the event runtime first (`SledState::blocking`).

use std::cell::Cell;

/// How much lower than the rest of the worker a lowered thread runs (`nice` steps) where the idle
/// class is refused.
pub const BACKGROUND_NICE: i32 = 10;

thread_local! {
    /// Set by [`lower_this_thread`].
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread was lowered by [`lower_this_thread`].
pub fn this_thread_is_lowered() -> bool {
    LOWERED.with(Cell::get)
}

/// Puts the calling thread in Linux's idle scheduling class (`SCHED_IDLE`): it runs only on a
/// core nothing else wants, and an event thread that wakes takes the core from it at once, so a
/// page or a snapshot never delays event processing by CPU time. Where the class is refused (it
/// never is for lowering a thread's own class, but a seccomp filter might), the thread is
/// lowered by [`BACKGROUND_NICE`] instead. No sled call may run on such a thread: sled's
/// process-wide lock held by a thread this low would stall the event path.
pub fn lower_this_thread() {
    LOWERED.with(|l| l.set(true));
    // SAFETY: plain system calls on the calling thread (pid 0), a valid `sched_param`.
    let idle = unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
    };
    if idle == 0 {
        return;
    }
    let why = std::io::Error::last_os_error();
    // SAFETY: plain system calls on the calling thread, no pointers.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now + BACKGROUND_NICE)
    };
    if r != 0 {
        tracing::debug!(idle = %why, error = %std::io::Error::last_os_error(), "cannot lower the thread's priority");
    }
}
