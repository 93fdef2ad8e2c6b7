//! CPU priority of background threads (`REFRESH_NICE`).
//!
//! On Linux the nice value is per thread and inherited by the threads a
//! thread starts. The status refresh is bulk background work: on a host
//! shared with `serve`, its CPU use made the board reads' tail several times
//! longer (docs/BENCHMARKS.md), so the threads that run it lower their
//! priority. Deliveries keep theirs: nicing the whole worker doubled the
//! purchase → shipment p99 under purchase load.

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
