//! `conndoc watch` end to end: the daemon as the `conndoc` binary cargo built from this tree
//! (CARGO_BIN_EXE_conndoc), real service ports, receivers, Prometheus, Chromium and network
//! namespaces. A test whose programs or privileges are missing is reported as ignored with
//! the reason, and fails under CI=true (common::trial).

mod alertmanager;
mod chromium;
mod cli;
mod common;
mod daemon;
mod hardening;
mod https;
mod lab;
mod prometheus;
mod proxy;

use conndoc_testsupport::{program, root, Need, Tests};

fn main() {
    // Re-executed inside a lab namespace as the target's server.
    if std::env::var_os(lab::SERVER_ENV).is_some() {
        lab::server_child();
        return;
    }
    let mut t = Tests::new();
    let none = Need::met();
    let mut list: Vec<(&str, Need, fn())> = vec![
        (
            "cli::check_config_accepts_the_documented_examples",
            none.clone(),
            cli::check_config_accepts_the_documented_examples,
        ),
        (
            "cli::check_config_errors_name_file_line_and_field",
            none.clone(),
            cli::check_config_errors_name_file_line_and_field,
        ),
        ("cli::check_diagnoses_every_target_once", none.clone(), cli::check_diagnoses_every_target_once),
        (
            "cli::check_draws_a_progress_bar_on_a_terminal",
            program("script", "util-linux"),
            cli::check_draws_a_progress_bar_on_a_terminal,
        ),
        ("daemon::down_with_cause_alert_then_resolved", none.clone(), daemon::down_with_cause_alert_then_resolved),
        ("daemon::receiver_down_then_back_nothing_lost", none.clone(), daemon::receiver_down_then_back_nothing_lost),
        (
            "daemon::kill9_and_restart_keeps_state_and_history",
            none.clone(),
            daemon::kill9_and_restart_keeps_state_and_history,
        ),
        (
            "daemon::sighup_reload_keeps_state_and_sigterm_flushes",
            none.clone(),
            daemon::sighup_reload_keeps_state_and_sigterm_flushes,
        ),
        ("daemon::dashboard_and_api_shapes", none.clone(), daemon::dashboard_and_api_shapes),
        (
            "daemon::accepted_then_closed_is_down_with_its_cause",
            none.clone(),
            daemon::accepted_then_closed_is_down_with_its_cause,
        ),
        (
            "https::alerts_over_https_with_a_private_ca",
            program("openssl", "openssl"),
            https::alerts_over_https_with_a_private_ca,
        ),
        (
            "lab::lab_target_off_on_and_firewalled",
            root().and(program("nft", "nftables")).and(program("ip", "iproute2")),
            lab::lab_target_off_on_and_firewalled,
        ),
        (
            "prometheus::prometheus_scrapes_target_up_and_cause",
            program("prometheus", "prometheus"),
            prometheus::prometheus_scrapes_target_up_and_cause,
        ),
        (
            "prometheus::promtool_checks_and_tests_the_rules",
            program("promtool", "prometheus"),
            prometheus::promtool_checks_and_tests_the_rules,
        ),
        (
            "chromium::dashboard_shows_target_going_down_with_its_cause",
            chromium::need_chromium(),
            chromium::dashboard_shows_target_going_down_with_its_cause,
        ),
    ];
    list.push((
        "alertmanager::alertmanager_receives_silences_survives_downtime_and_resolves",
        program("prometheus-alertmanager", "prometheus-alertmanager"),
        alertmanager::alertmanager_receives_silences_survives_downtime_and_resolves,
    ));
    list.push((
        "alertmanager::fleet_examples_pass_their_tools",
        program("amtool", "prometheus-alertmanager").and(program("promtool", "prometheus")),
        alertmanager::fleet_examples_pass_their_tools,
    ));
    for (name, need, f) in list.into_iter().chain(hardening::tests()).chain(proxy::tests()) {
        t.add(name, &need, f);
    }
    t.run();
}
