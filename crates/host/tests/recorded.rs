//! Parsers against output recorded on real systems (tests/fixtures/README.md).

#[test]
fn real_audit_records_give_the_bind_denials() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audit-avc-recorded.log")).unwrap();
    let d = conndoc_host::audit::bind_denials(&text);
    assert_eq!(d.len(), 2, "the SYSCALL record is not a denial: {d:?}");
    assert_eq!(d[0].port, Some(4881));
    assert_eq!(d[0].comm.as_deref(), Some("nginx"));
    assert_eq!(d[0].pid, Some(2914));
    assert_eq!(d[0].permission, "name_bind");
    assert_eq!(d[0].tcontext, "system_u:object_r:unreserved_port_t:s0");
    assert_eq!(d[0].tclass, "tcp_socket");
    assert!(!d[0].permissive);
    assert_eq!(d[1].port, Some(8085));
    assert!(d[1].permissive, "permissive=1: logged, not enforced");
}
