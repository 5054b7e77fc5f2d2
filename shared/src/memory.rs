//! The allocator's arena limit, set once at start-up, before any thread is spawned.
//!
//! Why it exists: glibc's malloc gives threads that allocate at the same time arenas of their
//! own (up to 8 per core), and memory freed in one arena is only reused by that arena. The
//! worker's threads (the runtime's, sled's blocking pool, the dashboard's) each kept their own
//! high-water mark: draining a backlog of 50,000 events peaked at 141 MiB RSS, over issue 12's
//! 128 MiB; with two arenas, 104 MiB (docs/PERFORMANCE.md, section 14). The receiver's threads
//! (the runtime's, the commit thread, the access-log writer) likewise. Both binaries call it
//! first in `main`; an operator's `MALLOC_ARENA_MAX` wins.

/// The arenas a process's allocations share (glibc only; elsewhere nothing is changed).
pub const ARENAS: i32 = 2;

/// Limits glibc's malloc to [`ARENAS`] arenas unless `MALLOC_ARENA_MAX` is set. Call first in
/// `main`.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
