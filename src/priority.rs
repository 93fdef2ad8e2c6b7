//! CPU priority of background threads (`REFRESH_NICE`).
//!
//! On Linux the nice value is per thread and inherited by the threads a
//! thread starts. The status refresh is bulk background work that must not
//! take CPU from `serve` on a shared host, so the threads that run it lower
//! their priority; deliveries keep theirs, as they are on the purchase's
//! path (the measurements behind both are in docs/BENCHMARKS.md).

/// Lowers the calling thread's priority to nice value `nice` (and so of the
/// threads it starts afterwards). Never raises it: a thread already at a
/// higher nice value keeps it; 0 changes nothing.
pub fn lower_current_thread(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: getpriority/setpriority take plain integers and touch no
    // memory of ours. With PRIO_PROCESS and 0, Linux applies them to the
    // calling thread.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if current >= nice {
        return;
    }
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower a background thread's priority"
        );
    }
}
