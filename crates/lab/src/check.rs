//! Checking a conndoc run against a scenario's `[expect]` (docs/lab.md, "What the checks
//! match"). Every text check looks only in the field it names, so a finding's own cause code
//! or summary can never stand in for its evidence.

use crate::scenario::{Expect, ExpectFinding, ExpectJson, ExpectSkipped};
use crate::RunOutput;
use serde_json::Value;
use std::time::Duration;

/// Check a run against the scenario's expectations; returns every mismatch.
pub fn check(exp: &Expect, out: &RunOutput) -> Vec<String> {
    let mut errs = Vec::new();
    let whole = out.json.as_ref();
    let json = match &exp.report_of {
        Some(name) => {
            let line = |v: &&Value| v.get("name").and_then(Value::as_str) == Some(name.as_str());
            let r = match whole {
                Some(Value::Array(lines)) => lines.iter().find(line),
                other => other.filter(line),
            }
            .and_then(|l| l.get("report"));
            if r.is_none() {
                errs.push(format!("report_of: no report of a target named {name:?} in the output"));
            }
            r
        }
        None => whole,
    };
    let cause = json.and_then(|j| j.pointer("/verdict/cause")).and_then(Value::as_str);
    if let Some(c) = &exp.cause {
        if cause != Some(c.as_str()) {
            errs.push(format!("verdict.cause: expected {c:?}, got {cause:?}"));
        }
    }
    let want_exit = exp.exit.or_else(|| exp.cause.as_ref().map(|c| if c == "ok" { 0 } else { 1 }));
    if let Some(x) = want_exit {
        if out.status != Some(x) {
            errs.push(format!("exit status: expected {x}, got {:?}", out.status));
        }
    }
    if let Some(ms) = exp.max_elapsed_ms {
        if out.elapsed > Duration::from_millis(ms) {
            errs.push(format!("took {:?}, more than the allowed {ms} ms", out.elapsed));
        }
    }
    let findings: &[Value] = json.and_then(|j| j.get("findings")).and_then(Value::as_array).map_or(&[], Vec::as_slice);
    for f in &exp.findings {
        check_finding(f, findings, &mut errs);
    }
    for j in &exp.json {
        check_pointer(j, whole, &mut errs);
    }
    let skipped: &[Value] = json.and_then(|j| j.get("skipped")).and_then(Value::as_array).map_or(&[], Vec::as_slice);
    for k in &exp.skipped {
        check_skipped(k, skipped, &mut errs);
    }
    for a in &exp.absent {
        if out.stdout.contains(a.as_str()) || out.stderr.contains(a.as_str()) {
            errs.push(format!("output contains {a:?}, which must never be printed"));
        }
    }
    for a in &exp.absent_cmdline {
        if let Some(line) = out.cmdlines.iter().find(|l| l.contains(a.as_str())) {
            errs.push(format!("a command line contained {a:?} during the run: {line}"));
        }
    }
    for c in &exp.seen_cmdline {
        if !out.cmdlines.iter().any(|l| l.contains(c.as_str())) {
            errs.push(format!(
                "no command line sampled during the run contains {c:?} ({} sampled)",
                out.cmdlines.len()
            ));
        }
    }
    for c in &exp.stdout_contains {
        if !out.stdout.contains(c.as_str()) {
            errs.push(format!("stdout does not contain {c:?}"));
        }
    }
    for c in &exp.stderr_contains {
        if !out.stderr.contains(c.as_str()) {
            errs.push(format!("stderr does not contain {c:?}"));
        }
    }
    let needs_json = exp.cause.is_some() || !exp.findings.is_empty() || !exp.json.is_empty() || !exp.skipped.is_empty();
    if json.is_none() && needs_json {
        errs.push("stdout is not one JSON object".into());
    }
    errs
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn check_finding(f: &ExpectFinding, findings: &[Value], errs: &mut Vec<String>) {
    let found = findings.iter().find(|x| str_field(x, "cause") == Some(f.cause.as_str()));
    let name = &f.cause;
    let found = match (found, f.exists) {
        (Some(_), false) => return errs.push(format!("a finding with cause {name:?} exists, and must not")),
        (None, false) => return,
        (None, true) => {
            let have: Vec<&str> = findings.iter().filter_map(|x| str_field(x, "cause")).collect();
            return errs.push(format!("no finding with cause {name:?} (findings: {have:?})"));
        }
        (Some(found), true) => found,
    };
    if let Some(sev) = &f.severity {
        let got = str_field(found, "severity");
        if got != Some(sev.as_str()) {
            errs.push(format!("finding {name}: severity is {got:?}, not {sev:?}"));
        }
    }
    let items: &[Value] = found.get("evidence").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let kinds: Vec<&str> = items.iter().filter_map(|e| str_field(e, "kind")).collect();
    for k in &f.evidence {
        if !kinds.contains(&k.as_str()) {
            errs.push(format!("finding {name}: no evidence of kind {k:?} (has {kinds:?})"));
        }
    }
    let texts: Vec<&str> = items.iter().filter_map(|e| str_field(e, "text")).collect();
    for c in &f.contains {
        if !texts.iter().any(|t| t.contains(c.as_str())) {
            errs.push(format!("finding {name}: no evidence text contains {c:?} (texts: {texts:?})"));
        }
    }
    for c in &f.not_contains {
        if let Some(t) = texts.iter().find(|t| t.contains(c.as_str())) {
            errs.push(format!("finding {name}: evidence text {t:?} contains {c:?}, and must not"));
        }
    }
    let summary = str_field(found, "summary").unwrap_or_default();
    for c in &f.summary_contains {
        if !summary.contains(c.as_str()) {
            errs.push(format!("finding {name}: summary {summary:?} does not contain {c:?}"));
        }
    }
    let steps: Vec<&str> = found
        .get("remediation")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for c in &f.remediation_contains {
        if !steps.iter().any(|s| s.contains(c.as_str())) {
            errs.push(format!("finding {name}: no remediation step contains {c:?} (steps: {steps:?})"));
        }
    }
    let partial = str_field(found, "partial");
    for c in &f.partial_contains {
        if !partial.is_some_and(|p| p.contains(c.as_str())) {
            errs.push(format!("finding {name}: partial note {partial:?} does not contain {c:?}"));
        }
    }
}

fn check_pointer(j: &ExpectJson, json: Option<&Value>, errs: &mut Vec<String>) {
    let v = json.and_then(|x| x.pointer(&j.pointer));
    match (j.exists, v) {
        (Some(true), None) => errs.push(format!("{}: missing", j.pointer)),
        (Some(false), Some(v)) => errs.push(format!("{}: must not exist, is {v}", j.pointer)),
        _ => {}
    }
    if let Some(eq) = &j.equals {
        if v != Some(eq) {
            let got = v.map(|x| x.to_string()).unwrap_or("nothing".into());
            errs.push(format!("{}: expected {eq}, got {got}", j.pointer));
        }
    }
    if let Some(c) = &j.contains {
        let s = match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        match s {
            None => errs.push(format!("{}: missing (expected it to contain {c:?})", j.pointer)),
            Some(s) if !s.contains(c.as_str()) => errs.push(format!("{}: {s} does not contain {c:?}", j.pointer)),
            Some(_) => {}
        }
    }
}

fn check_skipped(k: &ExpectSkipped, skipped: &[Value], errs: &mut Vec<String>) {
    let found = skipped.iter().find(|x| str_field(x, "check") == Some(k.check.as_str()));
    let name = &k.check;
    let found = match (found, k.exists) {
        (Some(_), false) => return errs.push(format!("check {name:?} is listed as skipped, and must not be")),
        (None, false) => return,
        (None, true) => {
            let have: Vec<&str> = skipped.iter().filter_map(|x| str_field(x, "check")).collect();
            return errs.push(format!("no skipped check named {name:?} (skipped: {have:?})"));
        }
        (Some(found), true) => found,
    };
    let reason = str_field(found, "reason").unwrap_or_default();
    for c in &k.reason_contains {
        if !reason.contains(c.as_str()) {
            errs.push(format!("skipped {name}: reason {reason:?} does not contain {c:?}"));
        }
    }
    let hint = str_field(found, "hint");
    for c in &k.hint_contains {
        if !hint.is_some_and(|h| h.contains(c.as_str())) {
            errs.push(format!("skipped {name}: hint {hint:?} does not contain {c:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A report shaped like conndoc's: a firewall-drop finding whose cause code and summary
    /// say "drop" while no evidence text does.
    fn report() -> Value {
        json!({
            "verdict": { "cause": "firewall-drop", "summary": "a rule drops the SYN" },
            "findings": [{
                "cause": "firewall-drop",
                "severity": "critical",
                "summary": "a firewall rule drops packets to 10.0.0.2:7000",
                "evidence": [
                    { "kind": "connect", "text": "connect 10.0.0.2:7000 → timeout after 1s", "data": { "verdict": "drop" } },
                    { "kind": "firewall-rule", "text": "nftables inet lab input handle 2: `tcp dport 7000 counter`" }
                ],
                "remediation": ["remove the rule: `nft delete rule inet lab input handle 2`"],
                "partial": "client-side evidence only"
            }],
            "skipped": [
                { "check": "packet capture", "reason": "needs CAP_NET_RAW", "hint": "run as root" },
                { "check": "server-side inspection", "reason": "enter netns: EPERM" }
            ]
        })
    }

    fn out(json: Value, status: i32) -> RunOutput {
        RunOutput {
            status: Some(status),
            stdout: json.to_string(),
            stderr: "warning: something".into(),
            json: Some(json),
            elapsed: Duration::from_millis(10),
            argv: vec![],
            cmdlines: vec!["sshd: root@notty".into(), "conndoc inspect --bracket --json --port 7000".into()],
            engines: vec![],
        }
    }

    fn expect(toml_text: &str) -> Expect {
        let e: Expect = toml::from_str(toml_text).expect("expect parses");
        e.validate().expect("valid expectation");
        e
    }

    fn errors(toml_text: &str) -> Vec<String> {
        check(&expect(toml_text), &out(report(), 1))
    }

    #[test]
    fn report_of_reads_one_target_of_a_check_run() {
        let lines = serde_json::json!([
            { "name": "plain", "state": "down", "report": { "verdict": { "cause": "no-listener" } } },
            { "name": "app", "state": "down", "report": report() },
        ]);
        let e = expect("report_of = \"app\"\ncause = \"firewall-drop\"\n[[json]]\npointer = \"/0/report/verdict/cause\"\nequals = \"no-listener\"");
        assert_eq!(check(&e, &out(lines.clone(), 1)), Vec::<String>::new());
        let e = expect("report_of = \"plain\"\ncause = \"firewall-drop\"");
        assert_eq!(check(&e, &out(lines.clone(), 1)).len(), 1, "the other target's verdict");
        let errs = check(&expect("report_of = \"nope\""), &out(lines, 1));
        assert!(errs.iter().any(|e| e.contains("no report of a target named \"nope\"")), "{errs:?}");
    }

    #[test]
    fn a_matching_expectation_passes() {
        let e = errors(
            r#"
            cause = "firewall-drop"
            [[finding]]
            cause = "firewall-drop"
            severity = "critical"
            evidence = ["connect", "firewall-rule"]
            contains = ["timeout after 1s", "handle 2"]
            not_contains = ["ECONNREFUSED"]
            summary_contains = ["drops packets"]
            remediation_contains = ["nft delete rule"]
            partial_contains = ["client-side"]
            [[finding]]
            cause = "no-listener"
            exists = false
            [[json]]
            pointer = "/verdict/summary"
            contains = "drops the SYN"
            [[json]]
            pointer = "/host"
            exists = false
            [[skipped]]
            check = "packet capture"
            reason_contains = ["CAP_NET_RAW"]
            hint_contains = ["root"]
            [[skipped]]
            check = "firewall of this host"
            exists = false
            "#,
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn contains_is_not_satisfied_by_the_cause_code_summary_or_data() {
        // "drop" is in the cause, the summary and an evidence item's data, never in a text.
        let e = errors("[[finding]]\ncause = \"firewall-drop\"\ncontains = [\"drop\"]");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("no evidence text contains \"drop\""), "{e:?}");
        let e = errors("[[finding]]\ncause = \"firewall-drop\"\ncontains = [\"nft delete rule\"]");
        assert_eq!(e.len(), 1, "remediation is not evidence: {e:?}");
    }

    #[test]
    fn every_key_can_fail() {
        let cases = [
            ("cause = \"no-listener\"", "verdict.cause"),
            ("exit = 0", "exit status"),
            ("max_elapsed_ms = 1", "more than the allowed"),
            ("[[finding]]\ncause = \"no-listener\"", "no finding with cause"),
            ("[[finding]]\ncause = \"firewall-drop\"\nexists = false", "must not"),
            ("[[finding]]\ncause = \"firewall-drop\"\nseverity = \"warning\"", "severity"),
            ("[[finding]]\ncause = \"firewall-drop\"\nevidence = [\"listener\"]", "no evidence of kind"),
            ("[[finding]]\ncause = \"firewall-drop\"\nnot_contains = [\"handle 2\"]", "must not"),
            ("[[finding]]\ncause = \"firewall-drop\"\nsummary_contains = [\"reset\"]", "summary"),
            ("[[finding]]\ncause = \"firewall-drop\"\nremediation_contains = [\"iptables\"]", "remediation"),
            ("[[finding]]\ncause = \"firewall-drop\"\npartial_contains = [\"server\"]", "partial"),
            ("[[json]]\npointer = \"/verdict/cause\"\nequals = \"ok\"", "expected \"ok\""),
            ("[[json]]\npointer = \"/verdict/summary\"\ncontains = \"reset\"", "does not contain"),
            ("[[json]]\npointer = \"/nothing\"\ncontains = \"x\"", "missing"),
            ("[[json]]\npointer = \"/host\"\nexists = true", "missing"),
            ("[[json]]\npointer = \"/verdict\"\nexists = false", "must not exist"),
            ("[[skipped]]\ncheck = \"firewall of this host\"", "no skipped check"),
            ("[[skipped]]\ncheck = \"packet capture\"\nexists = false", "must not be"),
            ("[[skipped]]\ncheck = \"packet capture\"\nreason_contains = [\"CAP_SYS_ADMIN\"]", "reason"),
            ("[[skipped]]\ncheck = \"server-side inspection\"\nhint_contains = [\"sudo\"]", "hint None"),
            ("absent = [\"something\"]", "must never be printed"),
            ("stdout_contains = [\"no such text\"]", "stdout does not contain"),
            ("absent_cmdline = [\"--port 7000\"]", "a command line contained"),
            ("seen_cmdline = [\"hunter2\"]", "no command line sampled"),
            ("stderr_contains = [\"no such text\"]", "stderr does not contain"),
        ];
        for (t, want) in cases {
            let e = errors(t);
            assert_eq!(e.len(), 1, "{t}: {e:?}");
            assert!(e[0].contains(want), "{t}: {e:?} should say {want:?}");
        }
    }

    #[test]
    fn skipped_checks_are_found_by_name_not_position() {
        let mut r = report();
        r["skipped"].as_array_mut().unwrap().reverse();
        let e = check(&expect("[[skipped]]\ncheck = \"packet capture\"\nhint_contains = [\"root\"]"), &out(r, 1));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn a_run_without_json_fails_json_checks() {
        let mut o = out(report(), 1);
        o.json = None;
        let e = check(&expect("[[skipped]]\ncheck = \"packet capture\""), &o);
        assert!(e.iter().any(|x| x.contains("not one JSON object")), "{e:?}");
    }

    #[test]
    fn expectations_that_cannot_fail_are_rejected() {
        for t in [
            "[[json]]\npointer = \"/verdict\"",
            "[[json]]\npointer = \"verdict\"\nexists = true",
            "[[json]]\npointer = \"/verdict\"\nexists = false\nequals = 1",
            "[[json]]\npointer = \"/verdict\"\ncontains = \"\"",
            "[[finding]]\ncause = \"x\"\ncontains = [\"\"]",
            "[[finding]]\ncause = \"x\"\nexists = false\ncontains = [\"a\"]",
            "[[skipped]]\ncheck = \"x\"\nexists = false\nhint_contains = [\"a\"]",
            "absent = [\"\"]",
        ] {
            let e: Expect = toml::from_str(t).expect("parses");
            assert!(e.validate().is_err(), "{t} should be rejected");
        }
        assert!(toml::from_str::<Expect>("[[finding]]\ncause = \"x\"\ncontain = [\"a\"]").is_err(), "unknown key");
    }
}
