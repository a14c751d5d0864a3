//! The snapshot's pure parts; snapshots built from live state are tested in
//! crate::table (read_model_tests).

use super::*;

#[test]
fn merging_sums_counts_and_keeps_the_slowest() {
    let a = Bucket { count: 2, failures: 1, latency_sum_us: 10, latency_max_us: 8 };
    let c = Bucket { count: 1, failures: 0, latency_sum_us: 20, latency_max_us: 20 };
    let mut stored = vec![(2_000, a)];
    merge_buckets(&mut stored, &[(1_000, c), (2_000, c)]);
    assert_eq!(stored, [(1_000, c), (2_000, Bucket { count: 3, failures: 1, latency_sum_us: 30, latency_max_us: 20 })]);
}
