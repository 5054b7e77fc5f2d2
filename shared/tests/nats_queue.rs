//! The queue's JetStream implementation against a real `nats-server -js` (Debian's 2.9): append
//! with dedup, lease / ack / fail, redelivery after the ack wait, dead letters (list, show,
//! replay, purge), give-up after `max_attempts`, stats.
//!
//! Each test starts its own server on a free loopback port with a temporary store directory.
//! Without `nats-server` the tests print a loud SKIPPED line and pass, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where they fail (`stockhook_test_kit::nats`).

use std::time::{Duration, Instant};
use stockhook_shared::config::Platform;
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::nats::{NatsOptions, NatsQueue, NatsSink};
use stockhook_shared::queue::{
    now_ms, AppendOutcome, DeadFilter, EventSink, Failure, NewEvent, QueueOps,
};
use stockhook_test_kit::nats::{self, NatsServer};

fn opts(url: &str) -> NatsOptions {
    let mut o = NatsOptions::new(url, "test");
    o.ack_wait = Duration::from_secs(2);
    o.max_attempts = 3;
    o
}

fn event(source: &str, delivery: Option<&str>, body: &str) -> NewEvent {
    NewEvent {
        source: source.into(),
        platform: Platform::Simple,
        received_at_ms: now_ms(),
        headers: vec![("x-stockhook-topic", "inventory".into())],
        body: bytes::Bytes::from(body.to_string()),
        dedup_key: delivery.map(|d| format!("{source}\0{d}")),
    }
}

fn accepted(o: AppendOutcome) -> EventId {
    match o {
        AppendOutcome::Accepted(id) => id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// Appends [`event`] to `sink`, asserting it is accepted; its id.
async fn append(sink: &NatsSink, source: &str, delivery: Option<&str>, body: &str) -> EventId {
    accepted(sink.append(event(source, delivery, body)).await.unwrap())
}

#[tokio::test]
async fn append_dedup_lease_ack_and_stats() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    sink.ready().unwrap();
    let a = append(&sink, "shop", Some("d1"), "{\"a\":1}").await;
    let b = append(&sink, "shop", Some("d2"), "{\"b\":2}").await;
    let c = append(&sink, "other", None, "{\"c\":3}").await;
    assert!(a < b && b < c, "{a} {b} {c}");
    // The same delivery id again: a duplicate with the first id, nothing stored.
    assert_eq!(
        sink.append(event("shop", Some("d1"), "{\"a\":1}"))
            .await
            .unwrap(),
        AppendOutcome::Duplicate(a)
    );
    // The same delivery id from another source is another event.
    append(&sink, "other", Some("d1"), "{}").await;
    let st = sink.stats().await.unwrap();
    assert_eq!(st.pending, 4);
    assert_eq!(
        st.pending_by_source,
        vec![("other".to_string(), 2), ("shop".to_string(), 2)]
    );

    let q = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let leased = q.lease(10, 500, 0).await.unwrap();
    let ids: Vec<EventId> = leased.iter().map(|l| l.envelope.id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(&ids[..3], &[a, b, c]);
    assert!(leased.iter().all(|l| l.attempts == 1));
    assert_eq!(leased[0].envelope.body, b"{\"a\":1}");
    assert_eq!(leased[0].envelope.source, "shop");
    assert_eq!(leased[0].envelope.topic(), Some("inventory"));
    // The envelope is still in the stream while leased.
    assert_eq!(q.get(a).await.unwrap().body, b"{\"a\":1}");
    let st = q.stats().await.unwrap();
    assert_eq!((st.pending, st.leased), (0, 4));
    q.ack(ids).await.unwrap();
    // Acked: gone from the work queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = q.stats().await.unwrap();
        if st.pending == 0 && st.leased == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "acks not applied: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(q.lease(10, 200, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn lease_waits_for_an_append() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    let q = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let started = Instant::now();
    let (leased, _) = tokio::join!(q.lease(10, 3000, 0), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.append(event("shop", None, "{}")).await.unwrap()
    });
    let leased = leased.unwrap();
    assert_eq!(leased.len(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a waiting lease returns when an event arrives, not at its deadline ({:?})",
        started.elapsed()
    );
}

/// A `nats-server` for the running test and a sink on it; `None` (the test returns, loudly
/// skipped) where nats-server is not installed.
async fn server_and_sink() -> Option<(NatsServer, NatsSink)> {
    let server = nats::start_required()?;
    let sink = NatsSink::connect(opts(&server.url)).await.unwrap();
    Some((server, sink))
}

/// A transient failure to retry now.
fn db_down() -> Failure {
    Failure::Transient {
        error: "db down".into(),
        retry_at_ms: now_ms(),
    }
}

#[tokio::test]
async fn unacked_is_redelivered_transient_retries_then_dead_letters() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    let crashed = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let id = append(&sink, "shop", Some("x"), "{}").await;
    // Delivery 1: its worker dies (its heartbeat stops) without acking; after the ack wait
    // (2 s) it comes back, to another worker.
    let l = crashed.lease(1, 500, 0).await.unwrap();
    assert_eq!((l[0].envelope.id, l[0].attempts), (id, 1));
    drop(crashed);
    let q = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let l = q.lease(1, 4000, 0).await.unwrap();
    assert_eq!((l[0].envelope.id, l[0].attempts), (id, 2));
    // Delivery 2: transient failure, retry now.
    q.fail(id, db_down()).await.unwrap();
    // The NAK's delay holds (not the ack wait of 2 s).
    let t = Instant::now();
    let l = q.lease(1, 1500, 0).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((l[0].envelope.id, l[0].attempts), (id, 3));
    // Delivery 3 = max_attempts: a transient failure now dead-letters it.
    q.fail(id, db_down()).await.unwrap();
    assert!(q.lease(1, 500, 0).await.unwrap().is_empty());
    let dead = q.dead_list(DeadFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("db down"), "{}", dead[0].error);
    assert_eq!(q.stats().await.unwrap().dead, 1);
}

#[tokio::test]
async fn permanent_failure_dead_letters_show_replay_purge() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    let q = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let a = append(&sink, "shop", None, "not json\nat all").await;
    let b = append(&sink, "other", None, "user-42 gone").await;
    let l = q.lease(10, 500, 0).await.unwrap();
    assert_eq!(l.len(), 2);
    for id in [a, b] {
        q.fail(
            id,
            Failure::Permanent {
                error: "body is not JSON:\nline 1".into(),
            },
        )
        .await
        .unwrap();
    }
    let dead = q.dead_list(DeadFilter::default()).await.unwrap();
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(dead[0].error, "body is not JSON: line 1");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].source, "shop");
    assert_eq!(dead[0].topic.as_deref(), Some("inventory"));
    let only_shop = DeadFilter {
        source: Some("shop".into()),
        ..Default::default()
    };
    assert_eq!(q.dead_list(only_shop.clone()).await.unwrap().len(), 1);
    let (d, env) = q.dead_show(a).await.unwrap();
    assert_eq!((d.id, env.id), (a, a));
    assert_eq!(env.body, b"not json\nat all");
    assert!(matches!(
        q.dead_show(EventId(999)).await,
        Err(stockhook_shared::queue::QueueError::NotFound(_))
    ));
    assert_eq!(q.stats().await.unwrap().dead_by_source.len(), 2);

    // Replay: back in the work queue (a new event id), gone from the dead letters.
    assert_eq!(
        q.dead_replay(only_shop.clone(), true).await.unwrap(),
        vec![a]
    );
    assert_eq!(q.dead_list(DeadFilter::default()).await.unwrap().len(), 2);
    assert_eq!(q.dead_replay(only_shop, false).await.unwrap(), vec![a]);
    let l = q.lease(10, 2000, 0).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].envelope.body, b"not json\nat all");
    assert_eq!(l[0].attempts, 1);
    q.ack(vec![l[0].envelope.id]).await.unwrap();

    // purge_matching (eBay account deletion) removes the dead letter naming the user.
    assert_eq!(
        q.purge_matching("other".into(), "user-42".into())
            .await
            .unwrap(),
        1
    );
    assert!(q.dead_list(DeadFilter::default()).await.unwrap().is_empty());
    // Purge of a missing id names it.
    let missing = DeadFilter {
        ids: vec![b],
        ..Default::default()
    };
    assert!(matches!(
        q.dead_purge(missing, false).await,
        Err(stockhook_shared::queue::QueueError::NotFound(id)) if id == b
    ));
}

#[tokio::test]
async fn two_consumers_share_the_work_without_overlap() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    let mut want = Vec::new();
    for i in 0..200 {
        want.push(append(&sink, "shop", Some(&format!("d{i}")), "{}").await);
    }
    let q1 = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let q2 = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < want.len() {
        assert!(Instant::now() < deadline, "drained {} of 200", seen.len());
        for q in [&q1, &q2] {
            let ids: Vec<EventId> = q
                .lease(16, 100, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.envelope.id)
                .collect();
            seen.extend(ids.iter().copied());
            q.ack(ids).await.unwrap();
        }
    }
    seen.sort();
    assert_eq!(seen, want, "every event exactly once across both workers");
}

/// A live worker keeps its lease however long it works: its in-progress acks renew the ack wait
/// (2 s here), so another worker gets nothing while it holds the event, and gets it within the
/// ack wait once the holder is gone.
#[tokio::test]
async fn a_held_lease_is_kept_alive_past_the_ack_wait_and_lapses_when_its_holder_goes() {
    let Some((server, sink)) = server_and_sink().await else {
        return;
    };
    let slow = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let other = NatsQueue::connect(opts(&server.url)).await.unwrap();
    let id = append(&sink, "shop", Some("slow"), "{}").await;
    let l = slow.lease(1, 1000, 0).await.unwrap();
    assert_eq!(l[0].envelope.id, id);
    // Three ack waits of polling: nothing for the other worker.
    let held_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < held_until {
        let got = other.lease(1, 500, 0).await.unwrap();
        assert!(
            got.is_empty(),
            "redelivered while its holder works: {got:?}"
        );
    }
    // The holder goes away (a crash): the event comes back within about one ack wait.
    drop(slow);
    let gone = Instant::now();
    let l = other.lease(1, 5000, 0).await.unwrap();
    assert_eq!((l[0].envelope.id, l[0].attempts), (id, 2));
    assert!(
        gone.elapsed() < Duration::from_secs(4),
        "{:?}",
        gone.elapsed()
    );
    other.ack(vec![id]).await.unwrap();
}

#[tokio::test]
async fn a_lease_is_capped_by_bytes_and_carries_at_least_one_event() {
    use stockhook_shared::queue::protocol::MAX_LEASE_BYTES;
    let Some(server) = nats::start_required() else {
        return;
    };
    let sink = NatsSink::connect(opts(&server.url)).await.unwrap();
    let q = NatsQueue::connect(opts(&server.url)).await.unwrap();
    // The server's default max_payload is 1 MiB: bodies of 900 KiB, 40 of them, are more than
    // one lease may carry.
    let body = "x".repeat(900 << 10);
    let n = 40;
    for _ in 0..n {
        append(&sink, "shop", None, &body).await;
    }
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < n {
        let got = q.lease(256, 2000, 0).await.unwrap();
        assert!(!got.is_empty(), "events left unleased: {sizes:?}");
        let bytes: usize = got.iter().map(|l| l.envelope.encode().len()).sum();
        assert!(
            got.len() == 1 || bytes <= MAX_LEASE_BYTES,
            "{} events, {bytes} bytes in one lease",
            got.len()
        );
        sizes.push(got.len());
    }
    assert!(sizes.len() >= 2, "one lease carried everything: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), n, "{sizes:?}");
}
