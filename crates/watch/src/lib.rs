//! The watch daemon: scheduler, health state machine, history, alerts, metrics, dashboard.
