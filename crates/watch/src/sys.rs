//! Process-level helpers: log lines through `tracing`, and the allocator tunables that keep
//! large renders from holding memory.

/// A log event through `tracing` (the binary's subscriber writes it as text or JSON).
pub fn log(level: &str, msg: impl AsRef<str>) {
    let msg = msg.as_ref();
    match level {
        "error" => tracing::error!("{msg}"),
        "warn" => tracing::warn!("{msg}"),
        _ => tracing::info!("{msg}"),
    }
}

/// Keep glibc from giving every thread its own malloc arena: large responses (/metrics of
/// 10,000 targets is ~10 MB) rendered on changing blocking threads would otherwise leave
/// tens of MB behind in each arena.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; called before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
#[cfg(not(target_env = "gnu"))]
pub fn limit_malloc_arenas() {}

/// Give memory freed after a large response back to the system.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
#[cfg(not(target_env = "gnu"))]
pub fn trim_heap() {}
