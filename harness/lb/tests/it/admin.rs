//! The admin API: connection draining, and the same operations over HTTP
//! (what the kind provider uses against the LB container).

use zdt_lb::testing as lb_support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use lb_support::{ask, healthy_lb, request, EventLog, TestBackend};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_lb::{AdminClient, AdminError, BackendConfig, Health, Lb, LbConfig, ProbeSettings};

fn probe() -> ProbeSettings {
    ProbeSettings {
        interval: Dur::from_millis(200),
        timeout: Dur::from_millis(150),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
    }
}

/// Open connections until one is answered by `name`; returns it with the
/// first answer read.
async fn connection_on(lb: SocketAddr, name: &str) -> TcpStream {
    for _ in 0..64 {
        let mut s = TcpStream::connect(lb).await.unwrap();
        if request(&mut s).await.unwrap() == name {
            return s;
        }
    }
    panic!("no connection landed on {name} in 64 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_finish_refuses_new_and_cuts_at_the_timeout() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    let b = TestBackend::start("b", clock).await;
    let lb = healthy_lb(
        LbConfig {
            probe: probe(),
            seed: 11,
            ..Default::default()
        },
        vec![a.spec(), b.spec()],
        events,
        2,
        Duration::from_secs(5),
    )
    .await;
    let admin = lb.admin();
    let front = lb.frontend_addr();

    // An in-flight slow response on `a` finishes within the drain timeout.
    let mut slow = connection_on(front, "a").await;
    a.set_delay(Duration::from_millis(800));
    let in_flight = tokio::spawn(async move {
        let r = request(&mut slow).await;
        (r, slow)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    admin.drain("a", Some(Duration::from_secs(5))).unwrap();
    assert!(admin.get("a").unwrap().draining);
    for _ in 0..20 {
        assert_eq!(
            ask(front).await.unwrap(),
            "b",
            "a draining backend got a new connection"
        );
    }
    let (answer, slow) = in_flight.await.unwrap();
    assert_eq!(
        answer.unwrap(),
        "a",
        "the in-flight response was cut by the drain"
    );
    drop(slow);
    log.wait_for("Drained", Some("a"), Duration::ZERO, Duration::from_secs(2))
        .await;
    assert_eq!(
        admin.get("a").unwrap().health,
        Health::Healthy,
        "drain is not health"
    );

    // Restore: `a` takes new connections again.
    admin.restore("a").unwrap();
    let mut slow = connection_on(front, "a").await;

    // A response slower than the drain timeout is cut when it expires.
    a.set_delay(Duration::from_secs(3));
    let t = clock.now();
    admin.drain("a", Some(Duration::from_millis(300))).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), request(&mut slow))
        .await
        .expect("the connection outlived the drain timeout");
    assert!(r.is_err(), "expected a cut connection, got {r:?}");
    let cut = log
        .wait_for("ConnectionsCut", Some("a"), t, Duration::from_secs(1))
        .await;
    assert!(cut.at - t >= Duration::from_millis(300));
    for reason in ["Draining", "Restored", "Added"] {
        assert!(log.count(reason, Some("a")) >= 1, "no {reason} event");
    }
    lb.shutdown().await;
}

/// A raw request, for the malformed ones `AdminClient` would never send.
async fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "lb")
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_admin_api_drives_the_pool_and_rejects_bad_requests() {
    let clock = Clock::start();
    let (events, rx) = EventSink::channel(clock);
    let mut log = EventLog::new(rx);
    let a = TestBackend::start("a", clock).await;
    let b = TestBackend::start("b", clock).await;
    let lb = Lb::start(
        LbConfig {
            probe: probe(),
            ..Default::default()
        },
        vec![a.spec()],
        events,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let admin_addr = lb
        .serve_admin("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = AdminClient::new(admin_addr);
    client
        .wait_healthy(1, Duration::from_secs(5))
        .await
        .unwrap();

    // Add `b` over HTTP; it takes traffic once healthy.
    let added = client
        .add(&BackendConfig {
            name: "b".into(),
            address: b.app.to_string(),
            probe: Some(format!("http://{}/healthz", b.health)),
        })
        .await
        .unwrap();
    assert_eq!(added.name, "b");
    client
        .wait_healthy(2, Duration::from_secs(5))
        .await
        .unwrap();
    let list = client.list().await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(list
        .iter()
        .all(|s| s.health == Health::Healthy && s.probes >= 1));

    // Drain `a`: every new connection goes to `b`; restore brings `a` back.
    client
        .drain("a", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(client.list().await.unwrap()[0].draining);
    for _ in 0..10 {
        assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "b");
    }
    client.restore("a").await.unwrap();
    assert!(!client.list().await.unwrap()[0].draining);

    // Remove `b`: gone from the list, no more traffic.
    client.remove("b").await.unwrap();
    log.wait_for("Removed", Some("b"), Duration::ZERO, Duration::from_secs(1))
        .await;
    assert_eq!(client.list().await.unwrap().len(), 1);
    for _ in 0..10 {
        assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "a");
    }

    // Mistakes get a 4xx with a JSON error naming the problem.
    assert_eq!(
        client.remove("nope").await.unwrap_err(),
        AdminError::NotFound("nope".into())
    );
    let dup = BackendConfig {
        name: "a".into(),
        address: a.app.to_string(),
        probe: None,
    };
    assert!(matches!(
        client.add(&dup).await,
        Err(AdminError::AlreadyExists(_))
    ));
    let (status, body) = raw(admin_addr, "POST", "/backends", "{not json").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    let (status, body) = raw(
        admin_addr,
        "POST",
        "/backends",
        r#"{"name":"c","address":"127.0.0.1:1","probe":"ftp://x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("http://"),
        "{body}"
    );
    let (status, body) = raw(admin_addr, "POST", "/backends/a/drain?timeout=10", "").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    let (status, _) = raw(admin_addr, "PUT", "/backends/a", "").await;
    assert_eq!(status, 405);
    let (status, body) = raw(admin_addr, "GET", "/nothing", "").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/backends"));
    let (status, _) = raw(admin_addr, "GET", "/wait-healthy?count=5&timeout=300ms", "").await;
    assert_eq!(status, 504);
    // Still serving after all that.
    assert_eq!(ask(lb.frontend_addr()).await.unwrap(), "a");
    lb.shutdown().await;
}
