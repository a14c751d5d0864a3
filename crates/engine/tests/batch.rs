//! The batch entry point gives each target the verdict and evidence kinds a single
//! `gather` gives it: plain refusals (assembled from the one snapshot), a listening port,
//! and a port whose only listener is bound to another loopback address (both of which
//! take the full gather). Only ports this test opened are touched.

use conndoc_engine::{gather, gather_many, Options};
use conndoc_facts::{ConnectKind, Target};
use std::net::TcpListener;
use std::time::Duration;

/// A port on 127.0.0.1 that was free a moment ago (bound by us, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Verdict code, each finding's cause with its evidence kinds, and the connect results.
type Summary = (String, Vec<(String, Vec<String>)>, Vec<ConnectKind>);

fn summary(ev: &conndoc_facts::Evidence) -> Summary {
    let rep = conndoc_diagnose::diagnose(ev);
    let findings = rep
        .findings
        .iter()
        .map(|f| (f.cause.code().to_string(), f.evidence.iter().map(|e| e.kind.clone()).collect()))
        .collect();
    (rep.verdict.cause.code().to_string(), findings, ev.probes.iter().map(|p| p.kind).collect())
}

#[test]
fn batch_verdicts_equal_single_gather_verdicts() {
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listening.local_addr().unwrap().port();
    // Bound to 127.0.0.2 only: 127.0.0.1 on the same port is refused with a listener there.
    let other = TcpListener::bind("127.0.0.2:0").unwrap();
    let elsewhere = other.local_addr().unwrap().port();
    let refused: Vec<u16> = (0..5).map(|_| closed_port()).collect();

    let mut urls: Vec<String> = refused.iter().map(|p| format!("tcp://127.0.0.1:{p}")).collect();
    // Other addresses of 127.0.0.0/8 are this host's too (issue 11: each took a full
    // gather, firewall read included, and 1,000 of them took 12.6 s).
    urls.push(format!("tcp://127.0.0.7:{}", refused[0]));
    urls.push(format!("tcp://127.0.0.9:{}", refused[1]));
    let assembled = urls.len();
    urls.push(format!("tcp://127.0.0.1:{up}"));
    urls.push(format!("tcp://127.0.0.1:{elsewhere}"));
    let opts = Options { timeout: Duration::from_secs(2), ..Default::default() };
    let items: Vec<(Target, Options)> = urls.iter().map(|u| (Target::parse(u).unwrap(), opts.clone())).collect();

    let batch = gather_many(items.clone(), 4);
    assert_eq!(batch.len(), items.len());
    // The refusals were assembled from one snapshot of the host (not gathered one by one).
    let snaps: std::collections::BTreeSet<_> =
        batch[..assembled].iter().map(|b| b.as_ref().unwrap().host.as_ref().unwrap().elapsed_us).collect();
    assert_eq!(snaps.len(), 1, "one snapshot for all refused ports: {snaps:?}");
    for ((t, o), b) in items.into_iter().zip(batch) {
        let b = b.unwrap();
        assert_eq!(b.target.port, t.port, "results keep the order of the targets");
        let single = gather(t.clone(), &o).unwrap();
        let (bv, bf, bp) = summary(&b);
        let (sv, sf, sp) = summary(&single);
        assert_eq!(bv, sv, "{}: batch verdict {bv}, single {sv}", t.port);
        assert_eq!(bf, sf, "{}: findings and their evidence kinds", t.port);
        assert_eq!(bp, sp, "{}: connect results", t.port);
        let (bh, sh) = (b.host.as_ref().unwrap(), single.host.as_ref().unwrap());
        assert_eq!(bh.listeners.len(), sh.listeners.len(), "{}", t.port);
        assert_eq!(bh.port_sockets_read, sh.port_sockets_read, "{}", t.port);
        assert_eq!(b.skipped.len(), single.skipped.len(), "{}: {:?} vs {:?}", t.port, b.skipped, single.skipped);
    }
    let by_port =
        |p: u16, ev: &[conndoc_facts::Evidence]| summary(ev.iter().find(|e| e.target.port.get() == p).unwrap()).0;
    let again: Vec<_> = gather_many(urls.iter().map(|u| (Target::parse(u).unwrap(), opts.clone())).collect(), 2)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by_port(refused[0], &again), "no-listener");
    for b in &again[refused.len()..assembled] {
        assert!(b.target.host.to_string().starts_with("127.0.0."), "{}", b.target.host);
        assert_eq!(summary(b).0, "no-listener", "{}", b.target.host);
        assert!(b.firewall.is_none(), "no rule can explain a refusal with no listener on a loopback address");
    }
    assert_eq!(by_port(up, &again), "ok");
    assert_ne!(by_port(elsewhere, &again), "ok");
    drop((listening, other));
}

#[test]
fn connect_many_classifies_refused_and_connected() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = conndoc_facts::Port::new(l.local_addr().unwrap().port()).unwrap();
    let down = conndoc_facts::Port::new(closed_port()).unwrap();
    let lo = "127.0.0.1".parse().unwrap();
    let t = Duration::from_secs(2);
    let probes = conndoc_engine::connect_many(&[(lo, down, t), (lo, up, t), (lo, down, t)]);
    let kinds: Vec<_> = probes.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ConnectKind::Refused, ConnectKind::Connected, ConnectKind::Refused]);
    assert_eq!(probes[0].errno.as_ref().unwrap().as_str(), "ECONNREFUSED");
    assert!(probes[0].local.is_some(), "a refused connect was bound to a source port");
    assert!(probes[1].errno.is_none());
}

/// `Keep::Verdict` (`conndoc check`'s table) skips reading each fast-path connect's local
/// address and nothing else: the verdicts equal those of `Keep::Everything`, whose
/// probes still carry the local address the connect evidence shows.
#[test]
fn verdict_only_batch_skips_the_local_address_not_the_verdict() {
    use conndoc_engine::{gather_each, Keep};
    use std::sync::Mutex;
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listening.local_addr().unwrap().port();
    let ports = [closed_port(), up, closed_port()];
    let opts = Options { timeout: Duration::from_secs(2), ..Default::default() };
    let items = || ports.iter().map(|p| (Target::parse(&format!("127.0.0.1:{p}")).unwrap(), opts.clone())).collect();
    let run = |keep| {
        let out = Mutex::new(vec![None; ports.len()]);
        gather_each(items(), 2, keep, &|i, r| out.lock().unwrap()[i] = Some(r.unwrap()));
        out.into_inner().unwrap().into_iter().map(Option::unwrap).collect::<Vec<_>>()
    };
    let (verdict, everything) = (run(Keep::Verdict), run(Keep::Everything));
    for (v, e) in verdict.iter().zip(&everything) {
        assert_eq!(conndoc_diagnose::verdict(v), conndoc_diagnose::verdict(e), "{}", v.target.port);
    }
    assert_eq!(conndoc_diagnose::verdict(&verdict[0]).cause.code(), "no-listener");
    assert_eq!(conndoc_diagnose::verdict(&verdict[1]).cause.code(), "ok");
    assert!(verdict[0].probes[0].local.is_none(), "no getsockname on the fast path: {:?}", verdict[0].probes[0]);
    assert!(everything[0].probes[0].local.is_some(), "the report's connect evidence names the source port");
    drop(listening);
}
