//! Minimal rtnetlink/sock_diag client: open, send a dump request, iterate messages and attributes.
