//! The allocator's settings, set once at start-up, before any thread is spawned: glibc's arena
//! limit, and transparent huge pages off for a process that uses mimalloc.
//!
//! Why it exists: glibc's malloc gives threads that allocate at the same time arenas of their
//! own (up to 8 per core), and memory freed in one arena is only reused by that arena. The
//! receiver's threads (the runtime's, the commit thread, the access-log writer) each kept their
//! own high-water mark, as the worker's did (a backlog drain peaked at 141 MiB RSS, 104 MiB with
//! two arenas: docs/PERFORMANCE.md, section 14). The receiver allocates with glibc and calls
//! [`limit_arenas`] first in `main`; an operator's `MALLOC_ARENA_MAX` wins. The worker allocates
//! with mimalloc since section 19 (glibc was a quarter of its CPU and slowed over a run), so it
//! calls [`no_transparent_huge_pages`] instead; its call of [`limit_arenas`] now only bounds what
//! C code still takes from glibc.

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

/// Transparent huge pages off for this process. mimalloc reserves its memory in large aligned
/// regions, and where THP is `always` (or `madvise`: mimalloc asks for them) the first touch of
/// each region makes a 2 MiB page resident: the receiver's VmHWM went from 22 to 75 MiB after
/// 50,000 requests (docs/PERFORMANCE.md section 18). With small pages mimalloc stays near glibc's
/// figure. The flag holds for every page touched from here on; an error (an old kernel) leaves
/// THP as it is. Call first in `main` of a binary whose global allocator is mimalloc.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
