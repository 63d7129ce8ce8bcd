//! Random and hostile HTTP requests against the two APIs zdt serves: the
//! emulator's Kubernetes API and the LB's admin API. Whatever arrives, each
//! answer must be a well-formed HTTP response that is not a 5xx, errors must
//! carry the API's error shape (a Kubernetes `Status`, or `{"error": …}`),
//! and the server must keep working afterwards.
//!
//! `ZDT_FUZZ_CASES` sets the cases per property (default 150).

use zdt_lb::testing as lb_support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use lb_support::{ask, TestBackend};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_emulator::{Emulator, EmulatorConfig};
use zdt_lb::{Lb, LbConfig, ProbeSettings};

/// How many answers were 2xx and how many 4xx. `TestRunner::run` takes an
/// `Fn`, so the counts are cells.
#[derive(Default)]
struct Tally {
    served: Cell<u32>,
    refused: Cell<u32>,
}

impl Tally {
    /// Print the counts; the generator must have reached both the happy and
    /// the error paths, or the property says little.
    fn check(&self, api: &str) {
        eprintln!(
            "fuzz_apis: {api}: {} cases, {} answered 2xx, {} 4xx",
            cases(),
            self.served.get(),
            self.refused.get()
        );
        assert!(
            self.refused.get() > 0,
            "no request was refused: the generator is too tame"
        );
        assert!(
            self.served.get() > 0,
            "no request succeeded: the generator misses every route"
        );
    }
}

fn cases() -> u32 {
    std::env::var("ZDT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// One generated request.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    ctype: String,
    body: Vec<u8>,
}

/// What came back: the status code, whether the body is streamed
/// (chunked), and the body read so far.
#[derive(Debug)]
struct Resp {
    code: u16,
    chunked: bool,
    body: Vec<u8>,
}

/// Send `req` on a fresh connection and read the response head, then the
/// body up to its Content-Length (or a short while for streamed bodies such
/// as watches, which do not end on their own).
async fn exchange(addr: SocketAddr, req: &Req) -> Result<Resp, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.method,
        req.path,
        req.ctype,
        req.body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write head: {e}"))?;
    // A server may answer (413) before reading an oversized body and close.
    let _ = s.write_all(&req.body).await;

    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .map_err(|_| "no response head within 10 s".to_string())?
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a complete response head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    parsed
        .parse(&buf[..head_end])
        .map_err(|e| format!("malformed response head: {e}"))?;
    let code = parsed.code.ok_or("response without a status code")?;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: Option<usize> = header("content-length").and_then(|v| v.trim().parse().ok());
    let mut body = buf[head_end..].to_vec();
    // A HEAD response announces the length of a body it does not send.
    let length = if req.method == "HEAD" {
        Some(0)
    } else {
        length
    };
    let body_deadline = if chunked {
        tokio::time::Instant::now() + Duration::from_millis(200)
    } else {
        deadline
    };
    while length.is_none_or(|l| body.len() < l) {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(body_deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("read body: {e}")),
        }
    }
    if let Some(l) = length {
        if body.len() < l {
            return Err(format!("body cut short: {} of {l} bytes", body.len()));
        }
    }
    Ok(Resp {
        code,
        chunked,
        body,
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                    Just("status".to_string()),
                    Just("name".to_string()),
                    Just("kind".to_string()),
                    Just("apiVersion".to_string()),
                    Just("address".to_string()),
                    Just("probe".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: JSON of plausible and implausible shapes, random bytes, very
/// deep nesting, and (rarely) bodies near or past the size limits.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        8 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialisable")),
        3 => (json_value(), "[a-z0-9-]{0,20}").prop_map(|(spec, name)| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": spec,
            }))
            .expect("serialisable")
        }),
        3 => prop::collection::vec(any::<u8>(), 0..512),
        1 => (1usize..20_000).prop_map(|d| {
            let mut v = vec![b'['; d];
            v.extend(std::iter::repeat_n(b']', d));
            v
        }),
        1 => (1usize..=3).prop_map(|mib| {
            let mut v = b"{\"metadata\":{\"name\":\"".to_vec();
            v.extend(std::iter::repeat_n(b'a', mib * 1024 * 1024));
            v.extend_from_slice(b"\"}}");
            v
        }),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("GET".to_string()),
        3 => Just("POST".to_string()),
        2 => Just("PUT".to_string()),
        3 => Just("PATCH".to_string()),
        2 => Just("DELETE".to_string()),
        1 => Just("HEAD".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[A-Z]{1,7}",
    ]
}

/// Path segments and query values may contain anything; percent-encode
/// what an HTTP request line cannot carry raw.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~=,!()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn k8s_path() -> impl Strategy<Value = String> {
    let group = prop_oneof![
        Just("/api/v1"),
        Just("/apis/apps/v1"),
        Just("/apis/policy/v1"),
        Just("/apis/discovery.k8s.io/v1"),
        Just("/apis/batch/v1"),
        Just("/api"),
        Just("/apis"),
        Just("/version"),
        Just("/openapi/v2"),
        Just(""),
    ];
    let ns = prop_oneof![
        Just(None),
        Just(Some("default".to_string())),
        Just(Some("kube-system".to_string())),
        ".{0,10}".prop_map(Some),
    ];
    let resource = prop_oneof![
        Just("pods"),
        Just("nodes"),
        Just("services"),
        Just("endpointslices"),
        Just("deployments"),
        Just("replicasets"),
        Just("jobs"),
        Just("poddisruptionbudgets"),
        Just("namespaces"),
        Just("widgets"),
        Just(""),
    ];
    let name = prop_oneof![
        Just(None),
        Just(Some("zdt-worker".to_string())),
        Just(Some("web".to_string())),
        ".{0,16}".prop_map(Some),
    ];
    let sub = prop_oneof![
        Just(None),
        Just(Some("status")),
        Just(Some("eviction")),
        Just(Some("scale")),
        Just(Some("log")),
    ];
    let query = prop::collection::vec(
        (
            prop_oneof![
                Just("labelSelector"),
                Just("fieldSelector"),
                Just("resourceVersion"),
                Just("gracePeriodSeconds"),
                Just("limit"),
                Just("continue"),
                Just("fieldManager"),
                Just("dryRun"),
                Just("propagationPolicy"),
                Just("bogus"),
            ],
            prop_oneof![
                Just("app=web".to_string()),
                Just("app in (web,api),tier!=db".to_string()),
                Just("spec.nodeName=zdt-worker".to_string()),
                Just("status.phase!=Running".to_string()),
                Just("metadata.namespace=default".to_string()),
                Just("-1".to_string()),
                Just("0".to_string()),
                Just("99999999999999999999".to_string()),
                ".{0,16}",
            ],
        ),
        0..4,
    );
    // A watch streams until its timeout: always give a short one.
    let watch = prop_oneof![
        4 => Just(None),
        1 => prop_oneof![Just("1"), Just("0"), Just("x")].prop_map(Some),
    ];
    (group, ns, resource, name, sub, query, watch).prop_map(
        |(group, ns, resource, name, sub, query, watch)| {
            let mut p = group.to_string();
            if let Some(ns) = ns {
                p.push_str("/namespaces/");
                p.push_str(&encode(&ns));
            }
            if !resource.is_empty() {
                p.push('/');
                p.push_str(resource);
            }
            if let Some(name) = name {
                p.push('/');
                p.push_str(&encode(&name));
            }
            if let Some(sub) = sub {
                p.push('/');
                p.push_str(sub);
            }
            let mut q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            if let Some(t) = watch {
                q.push(format!("watch=true&timeoutSeconds={t}"));
            }
            if !q.is_empty() {
                p.push('?');
                p.push_str(&q.join("&"));
            }
            // Always an origin-form target: a bare `?query` is not a request
            // line hyper lets through to the API at all.
            if !p.starts_with('/') {
                p.insert(0, '/');
            }
            p
        },
    )
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/json".to_string()),
        Just("application/merge-patch+json".to_string()),
        Just("application/strategic-merge-patch+json".to_string()),
        Just("application/json-patch+json".to_string()),
        Just("application/apply-patch+yaml".to_string()),
        Just("text/plain".to_string()),
        "[a-z/+-]{0,20}",
    ]
}

/// Requests a client could well send: real routes, real selectors, objects
/// of the right shape with random names and labels. Mixed in so the happy
/// paths (and what they change) are exercised too, not only the refusals.
fn plausible_k8s_request() -> impl Strategy<Value = Req> {
    let read = (
        prop_oneof![
            Just("/api"),
            Just("/apis"),
            Just("/version"),
            Just("/api/v1/nodes"),
            Just("/api/v1/pods"),
            Just("/api/v1/namespaces/default/pods"),
            Just("/api/v1/namespaces/default/services"),
            Just("/api/v1/namespaces"),
            Just("/apis/apps/v1/namespaces/default/deployments"),
            Just("/apis/apps/v1/replicasets"),
            Just("/apis/policy/v1/poddisruptionbudgets"),
            Just("/apis/discovery.k8s.io/v1/endpointslices"),
        ],
        prop_oneof![
            Just(String::new()),
            Just("?labelSelector=app%3Dweb".to_string()),
            Just("?fieldSelector=spec.nodeName%3Dzdt-worker".to_string()),
            Just("?labelSelector=app%20in%20(web,api)".to_string()),
            Just("?resourceVersion=0".to_string()),
            Just("?watch=true&timeoutSeconds=1".to_string()),
        ],
    )
        .prop_map(|(path, q)| Req {
            method: "GET".into(),
            path: format!("{path}{q}"),
            ctype: "application/json".into(),
            body: Vec::new(),
        });
    let create = ("[a-z][a-z0-9-]{0,12}", "[a-z]{1,6}").prop_map(|(name, app)| Req {
        method: "POST".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        ctype: "application/json".into(),
        body: serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .expect("serialisable"),
    });
    let label = ("[a-z]{1,8}", "[a-z0-9]{0,8}").prop_map(|(k, v)| Req {
        method: "PATCH".into(),
        path: "/api/v1/nodes/zdt-worker".into(),
        ctype: "application/merge-patch+json".into(),
        body: serde_json::to_vec(&serde_json::json!({"metadata": {"labels": {k: v}}}))
            .expect("serialisable"),
    });
    prop_oneof![4 => read, 2 => create, 1 => label]
}

fn k8s_request() -> impl Strategy<Value = Req> {
    let random =
        (method(), k8s_path(), content_type(), body()).prop_map(|(method, path, ctype, body)| {
            Req {
                method,
                path,
                ctype,
                body,
            }
        });
    prop_oneof![3 => random, 1 => plausible_k8s_request()]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn emulator_api_answers_every_request_without_a_5xx_and_keeps_serving() {
    let rt = rt();
    let emu = rt.block_on(async {
        Emulator::start_simulated(
            EmulatorConfig {
                workers: 2,
                ..EmulatorConfig::default()
            },
            EventSink::discard(Clock::start()),
        )
        .await
        .expect("emulator starts")
    });
    let addr = emu.addr();
    let tally = Tally::default();
    let mut runner = runner();
    let result = runner.run(&k8s_request(), |req| {
        rt.block_on(async {
            let resp = exchange(addr, &req)
                .await
                .map_err(|e| TestCaseError::fail(format!("{} {}: {e}", req.method, req.path)))?;
            prop_assert!(
                resp.code < 500,
                "{} {} answered {}: {}",
                req.method,
                req.path,
                resp.code,
                String::from_utf8_lossy(&resp.body)
            );
            if resp.code >= 400 {
                tally.refused.set(tally.refused.get() + 1);
                if req.method != "HEAD" {
                    let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| {
                        TestCaseError::fail(format!(
                            "{} {}: error body is not JSON ({e}): {:?}",
                            req.method,
                            req.path,
                            String::from_utf8_lossy(&resp.body)
                        ))
                    })?;
                    prop_assert_eq!(&v["kind"], "Status", "{} {}", req.method, req.path);
                    prop_assert_eq!(v["code"].as_u64(), Some(u64::from(resp.code)));
                    prop_assert!(
                        v["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{} {}: Status without a message",
                        req.method,
                        req.path
                    );
                }
            } else if resp.code < 300 {
                tally.served.set(tally.served.get() + 1);
                if !resp.chunked && req.method != "HEAD" && !resp.body.is_empty() {
                    prop_assert!(
                        serde_json::from_slice::<serde_json::Value>(&resp.body).is_ok(),
                        "{} {}: 2xx body is not JSON",
                        req.method,
                        req.path
                    );
                }
            }
            // Still serving after whatever that was.
            let alive = exchange(
                addr,
                &Req {
                    method: "GET".into(),
                    path: "/api/v1/namespaces/default".into(),
                    ctype: "application/json".into(),
                    body: Vec::new(),
                },
            )
            .await
            .map_err(|e| TestCaseError::fail(format!("after {} {}: {e}", req.method, req.path)))?;
            prop_assert!(
                alive.code == 200 || alive.code == 404,
                "after {} {}: the API answered {}",
                req.method,
                req.path,
                alive.code
            );
            Ok(())
        })
    });
    rt.block_on(emu.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
    tally.check("emulator");
}

fn lb_request() -> impl Strategy<Value = Req> {
    let name = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("new".to_string()),
        ".{0,10}",
    ];
    let route = (
        prop_oneof![
            Just("healthz"),
            Just("backends"),
            Just("backend"),
            Just("wait-healthy"),
            Just(""),
        ],
        name,
        prop_oneof![
            Just(None),
            Just(Some("drain")),
            Just(Some("restore")),
            Just(Some("x"))
        ],
        prop::collection::vec(
            (
                prop_oneof![Just("timeout"), Just("count"), Just("x")],
                prop_oneof![
                    Just("50ms".to_string()),
                    Just("0s".to_string()),
                    Just("3".to_string()),
                    Just("-1".to_string()),
                    ".{0,8}",
                ],
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(root, name, sub, query, with_name)| {
            let mut p = format!("/{root}");
            if with_name {
                p.push('/');
                p.push_str(&encode(&name));
                if let Some(s) = sub {
                    p.push('/');
                    p.push_str(s);
                }
            }
            let mut q: Vec<String> = query
                .iter()
                .filter(|(k, _)| *k != "timeout")
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            // wait-healthy waits 30 s by default; drains cut at their
            // timeout: keep both short so the run stays bounded.
            q.push(format!(
                "timeout={}",
                encode(
                    query
                        .iter()
                        .find(|(k, _)| *k == "timeout")
                        .map_or("50ms", |(_, v)| v.as_str())
                )
            ));
            format!("{p}?{}", q.join("&"))
        });
    // Backend bodies name only loopback or unresolvable-without-DNS
    // addresses: the test must not send traffic (or DNS queries) off the
    // machine.
    let backend_body = (
        ".{0,8}",
        prop_oneof![
            Just("127.0.0.1:1"),
            Just("localhost:2"),
            Just("[::1]:3"),
            Just("127.0.0.1"),
            Just("127.0.0.1:notaport"),
            Just(""),
        ],
        prop_oneof![
            Just(None),
            Just(Some("http://127.0.0.1:1/healthz")),
            Just(Some("tcp://127.0.0.1:1")),
            Just(Some("ftp://127.0.0.1:1")),
            Just(Some("http://127.0.0.1")),
        ],
    )
        .prop_map(|(name, address, probe)| {
            let mut v = serde_json::json!({"name": name, "address": address});
            if let Some(p) = probe {
                v["probe"] = p.into();
            }
            serde_json::to_vec(&v).expect("serialisable")
        });
    let body = prop_oneof![
        3 => Just(Vec::new()),
        3 => backend_body,
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialisable")),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => Just(vec![b'x'; 100 * 1024]),
    ];
    let random =
        (method(), route, content_type(), body).prop_map(|(method, path, ctype, body)| Req {
            method,
            path,
            ctype,
            body,
        });
    let plausible = prop_oneof![
        Just(("GET", "/healthz")),
        Just(("GET", "/backends")),
        Just(("GET", "/backends/a")),
        Just(("POST", "/backends/a/drain?timeout=50ms")),
        Just(("POST", "/backends/b/restore")),
        Just(("GET", "/wait-healthy?count=1&timeout=1s")),
    ]
    .prop_map(|(method, path)| Req {
        method: method.into(),
        path: path.into(),
        ctype: "application/json".into(),
        body: Vec::new(),
    });
    prop_oneof![3 => random, 1 => plausible]
}

#[test]
fn lb_admin_answers_every_request_without_a_5xx_and_keeps_forwarding() {
    let rt = rt();
    let clock = Clock::start();
    let (lb, a, b, admin_addr) = rt.block_on(async {
        let a = TestBackend::start("a", clock).await;
        let b = TestBackend::start("b", clock).await;
        let lb = Lb::start(
            LbConfig {
                probe: ProbeSettings {
                    interval: Dur::from_millis(100),
                    timeout: Dur::from_millis(100),
                    unhealthy_threshold: 2,
                    healthy_threshold: 1,
                },
                seed: 5,
                ..Default::default()
            },
            vec![a.spec(), b.spec()],
            EventSink::discard(clock),
            CancellationToken::new(),
        )
        .await
        .expect("lb starts");
        lb.admin()
            .wait_healthy(2, Duration::from_secs(5))
            .await
            .expect("backends healthy");
        let admin_addr = lb
            .serve_admin("127.0.0.1:0".parse().unwrap())
            .await
            .expect("admin API binds");
        (lb, a, b, admin_addr)
    });
    let front = lb.frontend_addr();
    let admin = lb.admin();
    let tally = Tally::default();
    let mut runner = runner();
    let result = runner.run(&lb_request(), |req| {
        rt.block_on(async {
            let resp = exchange(admin_addr, &req)
                .await
                .map_err(|e| TestCaseError::fail(format!("{} {}: {e}", req.method, req.path)))?;
            // A wait that runs out of time is answered 504, as the
            // Kubernetes API answers its own timeouts; nothing else may be 5xx.
            let wait_timed_out = resp.code == 504 && req.path.starts_with("/wait-healthy");
            prop_assert!(
                resp.code < 500 || wait_timed_out,
                "{} {} answered {}",
                req.method,
                req.path,
                resp.code
            );
            if resp.code >= 400 {
                tally.refused.set(tally.refused.get() + 1);
                if req.method != "HEAD" {
                    let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| {
                        TestCaseError::fail(format!(
                            "{} {}: error body is not JSON ({e})",
                            req.method, req.path
                        ))
                    })?;
                    prop_assert!(
                        v["error"].as_str().is_some_and(|m| !m.is_empty()),
                        "{} {}: error without a message: {v}",
                        req.method,
                        req.path
                    );
                }
            } else if resp.code < 300 {
                tally.served.set(tally.served.get() + 1);
            }
            // Put the two real backends back however the request left
            // them, then the data path must still forward.
            for t in [&a, &b] {
                if admin.get(&t.name).is_err() {
                    admin
                        .add(t.spec())
                        .map_err(|e| TestCaseError::fail(format!("re-adding {}: {e}", t.name)))?;
                }
                let _ = admin.restore(&t.name);
            }
            admin
                .wait_healthy(2, Duration::from_secs(5))
                .await
                .map_err(|e| {
                    TestCaseError::fail(format!("after {} {}: {e}", req.method, req.path))
                })?;
            let who = ask(front).await.map_err(|e| {
                TestCaseError::fail(format!(
                    "after {} {}: the LB stopped forwarding: {e}",
                    req.method, req.path
                ))
            })?;
            prop_assert!(who == "a" || who == "b", "answered by {who}");
            Ok(())
        })
    });
    rt.block_on(lb.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
    tally.check("lb admin");
}
