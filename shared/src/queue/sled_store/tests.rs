//! Tests of [`super`], kept apart so the module reads as production code.
use super::*;
use crate::config::Platform;

/// An event of `source` at `at` ms, deduplicated on `dedup` when given (also used by the
/// segment-log migration tests).
pub(super) fn ev(source: &str, dedup: Option<&str>, at: i64) -> NewEvent {
    NewEvent {
        source: source.into(),
        platform: Platform::Shopify,
        received_at_ms: at,
        headers: vec![("x-shopify-topic", "products/update".into())],
        body: format!("{{\"at\":{at}}}").into_bytes().into(),
        dedup_key: dedup.map(|d| format!("{source}\0{d}")),
    }
}

/// A store in a new temporary directory (returned first: keep it while the store is used).
fn open_with(o: StoreOptions) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let q = SledStore::open(&dir.path().join("queue"), o).unwrap();
    (dir, q)
}

/// A permanent failure saying `error`.
fn permanent(error: &str) -> Failure {
    Failure::Permanent {
        error: error.into(),
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        min_free_bytes: 0,
        max_attempts: 3,
        ..StoreOptions::default()
    }
}

/// The id of an accepted append; panics naming the outcome otherwise.
pub(super) fn accepted(o: &Result<AppendOutcome, QueueError>) -> EventId {
    match o {
        Ok(AppendOutcome::Accepted(id)) => *id,
        other => panic!("expected accepted, got {other:?}"),
    }
}

#[test]
fn append_lease_ack_in_order_and_dedup() {
    let (_dir, q) = open_with(opts());
    let out = q.append_batch(&[
        ev("a", Some("d1"), 1000),
        ev("a", Some("d2"), 1001),
        ev("a", Some("d1"), 1002),
    ]);
    let first = accepted(&out[0]);
    let second = accepted(&out[1]);
    assert!(first < second);
    assert!(matches!(out[2], Ok(AppendOutcome::Duplicate(id)) if id == first));
    let leased = q.lease_now(10, 60_000, 2000).unwrap();
    assert_eq!(
        leased.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        vec![first, second]
    );
    assert_eq!(leased[0].attempts, 1);
    assert_eq!(leased[0].envelope.body, b"{\"at\":1000}");
    assert!(
        q.lease_now(10, 60_000, 2000).unwrap().is_empty(),
        "leased events are not delivered twice"
    );
    q.ack(&[first, second], 3000).unwrap();
    let s = q.stats();
    assert_eq!((s.pending, s.leased, s.acked_retained), (0, 0, 2));
}

#[test]
fn expired_lease_is_delivered_again_with_attempts_counted() {
    let (_dir, q) = open_with(opts());
    let id = accepted(&q.append_batch(&[ev("a", None, 1)])[0]);
    assert_eq!(q.lease_now(1, 100, 1000).unwrap().len(), 1);
    assert_eq!(q.expire_leases(1099), 0);
    assert_eq!(q.expire_leases(1100), 1);
    let again = q.lease_now(1, 100, 1200).unwrap();
    assert_eq!(again[0].envelope.id, id);
    assert_eq!(again[0].attempts, 2);
}

#[test]
fn state_survives_reopen_and_leases_become_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let (a, b, c);
    {
        let q = SledStore::open(&path, opts()).unwrap();
        let out = q.append_batch(&[ev("a", Some("x"), 1), ev("b", None, 2), ev("a", None, 3)]);
        a = accepted(&out[0]);
        b = accepted(&out[1]);
        c = accepted(&out[2]);
        q.lease_now(3, 60_000, 10).unwrap();
        q.ack(&[a], 20).unwrap();
        q.fail(b, &permanent("topic x: missing field `id`"), 30)
            .unwrap();
        q.sync().unwrap();
    }
    let q = reopen_after_drop(&path, opts());
    let s = q.stats();
    assert_eq!((s.pending, s.dead, s.acked_retained), (1, 1, 1));
    let again = q.lease_now(10, 60_000, 40).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].envelope.id, c);
    assert_eq!(
        again[0].attempts, 2,
        "the attempt before the restart counts"
    );
    // The dedup key survived too.
    let out = q.append_batch(&[ev("a", Some("x"), 50)]);
    assert!(matches!(out[0], Ok(AppendOutcome::Duplicate(id)) if id == a));
    // New ids keep increasing after reopen.
    let d = accepted(&q.append_batch(&[ev("a", None, 60)])[0]);
    assert!(d > c);
}

#[test]
fn transient_failures_retry_later_then_dead_letter() {
    let (_dir, q) = open_with(opts());
    let id = accepted(&q.append_batch(&[ev("a", None, 1)])[0]);
    for attempt in 1..=3 {
        let l = q.lease_now(1, 60_000, attempt * 1000).unwrap();
        assert_eq!(l.len(), 1, "attempt {attempt}");
        q.fail(
            id,
            &Failure::Transient {
                error: "smtp down".into(),
                retry_at_ms: attempt * 1000 + 500,
            },
            attempt * 1000,
        )
        .unwrap();
        assert!(
            q.lease_now(1, 60_000, attempt * 1000 + 499)
                .unwrap()
                .is_empty(),
            "not before its retry time"
        );
    }
    let dead = q.dead_list(&DeadFilter::default()).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .error
            .contains("gave up after 3 attempts: smtp down"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].topic.as_deref(), Some("products/update"));
    // Replay makes it deliverable again with attempts reset.
    assert_eq!(
        q.dead_replay(&DeadFilter::default(), true).unwrap(),
        vec![id]
    );
    assert_eq!(q.stats().dead, 1, "dry run changes nothing");
    assert_eq!(
        q.dead_replay(&DeadFilter::default(), false).unwrap(),
        vec![id]
    );
    let l = q.lease_now(1, 60_000, 10_000).unwrap();
    assert_eq!(l[0].attempts, 1);
}

#[test]
fn purge_and_retention_sweep() {
    let (_dir, q) = open_with(StoreOptions {
        retention_ms: 1000,
        dedup_window_ms: 500,
        ..opts()
    });
    let out = q.append_batch(&[ev("a", Some("k"), 1), ev("b", None, 2)]);
    let (a, b) = (accepted(&out[0]), accepted(&out[1]));
    q.lease_now(2, 60_000, 10).unwrap();
    q.ack(&[a], 100).unwrap();
    q.fail(b, &permanent("bad"), 100).unwrap();
    assert!(matches!(
        q.dead_purge(
            &DeadFilter {
                source: Some("zzz".into()),
                ..Default::default()
            },
            false
        )
        .unwrap()
        .as_slice(),
        []
    ));
    assert_eq!(
        q.dead_purge(
            &DeadFilter {
                source: Some("b".into()),
                ..Default::default()
            },
            false
        )
        .unwrap(),
        vec![b]
    );
    assert!(matches!(q.get(b), Err(QueueError::NotFound(_))));
    assert_eq!(q.sweep(1099).unwrap(), 0);
    assert_eq!(q.sweep(1101).unwrap(), 1);
    assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
    // Dedup key expired with the window: the same delivery id is new again.
    assert!(matches!(
        q.append_batch(&[ev("a", Some("k"), 2000)])[0],
        Ok(AppendOutcome::Accepted(_))
    ));
}

#[test]
fn over_budget_refuses_and_stores_nothing() {
    let (_dir, q) = open_with(StoreOptions {
        max_queue_bytes: 1,
        ..opts()
    });
    q.refresh_disk_usage();
    let out = q.append_batch(&[ev("a", None, 1)]);
    assert!(matches!(out[0], Err(QueueError::OverBudget { .. })));
    assert_eq!(q.stats().pending, 0);
}

#[test]
fn second_open_fails_at_once_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _q = SledStore::open(&dir.path().join("queue"), opts()).unwrap();
    match SledStore::open(&dir.path().join("queue"), opts()) {
        Err(QueueError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, opened twice"),
    }
}

#[test]
fn a_lease_is_capped_by_bytes_and_carries_at_least_one_event() {
    let (_dir, q) = open_with(opts());
    let sized = |at: i64, n: usize| NewEvent {
        body: vec![b'x'; n].into(),
        ..ev("a", None, at)
    };
    // Ten 1 KiB bodies, then one larger than the whole cap, then one more.
    let mut batch: Vec<NewEvent> = (0..10).map(|i| sized(i, 1024)).collect();
    batch.push(sized(10, 8192));
    batch.push(sized(11, 1024));
    let ids: Vec<EventId> = q.append_batch(&batch).iter().map(accepted).collect();
    const CAP: usize = 4096;
    let mut leases: Vec<Vec<(EventId, u32)>> = Vec::new();
    loop {
        let got = q.lease_capped(256, CAP, 60_000, 100).unwrap();
        if got.is_empty() {
            break;
        }
        let bytes: usize = got.iter().map(|l| l.envelope.encode().len()).sum();
        assert!(
            got.len() == 1 || bytes <= CAP,
            "{} events, {bytes} bytes in one lease",
            got.len()
        );
        leases.push(got.iter().map(|l| (l.envelope.id, l.attempts)).collect());
    }
    let sizes: Vec<usize> = leases.iter().map(Vec::len).collect();
    // ~1.1 KiB encoded each: three fit under 4 KiB; the 8 KiB one goes alone.
    assert_eq!(sizes, vec![3, 3, 3, 1, 1, 1], "{sizes:?}");
    let all: Vec<EventId> = leases.iter().flatten().map(|(id, _)| *id).collect();
    assert_eq!(all, ids, "every event once, in arrival order");
    assert!(
        leases.iter().flatten().all(|(_, attempts)| *attempts == 1),
        "what the cap left out was not counted as an attempt"
    );
    assert_eq!(q.stats().leased, ids.len() as u64);
}
