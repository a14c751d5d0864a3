//! Target-host inspection: socket table via sock_diag, owning processes, limits, sysctls, counters, service manager, logs; entering a network namespace.
