//! `serve::Server` and `zdt serve` with real sockets: answers, keep-alive,
//! and nginx's stop semantics (SIGQUIT graceful, SIGTERM fast).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use zdt_emulator::node::serve::{ServeConfig, Server, ServerExit, Signal};

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn send(stream: &mut TcpStream, path: &str) -> io::Result<()> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(req.as_bytes()).await
}

/// Read one response (Content-Length bodies only, which is what the server
/// sends). `Ok(None)` is a clean EOF before any byte of a response.
async fn read_resp(stream: &mut TcpStream) -> io::Result<Option<Resp>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mid-head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mid-body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

async fn get(stream: &mut TcpStream, path: &str) -> io::Result<Option<Resp>> {
    send(stream, path).await?;
    read_resp(stream).await
}

/// True when the peer closed the connection (EOF or reset) without sending
/// anything more.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match timeout(LIMIT, stream.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Wait (bounded) until connecting to `addr` is refused.
async fn until_refused(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn answers_with_pod_and_node_headers_on_keep_alive() {
    let server = Server::start(ServeConfig::new(local(), "web-1", "worker-2"))
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    for _ in 0..3 {
        let r = get(&mut s, "/").await.unwrap().expect("a response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-pod"), Some("web-1"));
        assert_eq!(r.header("x-node"), Some("worker-2"));
        assert!(r.body.contains("web-1"), "{}", r.body);
        assert_ne!(r.header("connection"), Some("close"));
    }
    let r = get(&mut s, "/healthz").await.unwrap().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(server.exit_status(), None);
}

#[tokio::test]
async fn delay_holds_the_response_but_not_healthz() {
    let mut cfg = ServeConfig::new(local(), "p", "n");
    cfg.delay = Duration::from_millis(300);
    let server = Server::start(cfg).await.unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let t = Instant::now();
    get(&mut s, "/").await.unwrap().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    get(&mut s, "/healthz").await.unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn quit_is_graceful_in_flight_finishes_idle_closes_new_refused() {
    let mut cfg = ServeConfig::new(local(), "p", "n");
    cfg.delay = Duration::from_millis(700);
    let server = Server::start(cfg).await.unwrap();
    let addr = server.addr();

    // An idle keep-alive connection (one request done).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    get(&mut idle, "/healthz").await.unwrap().unwrap();
    // A busy connection with a request in flight.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    get(&mut busy, "/healthz").await.unwrap().unwrap();
    send(&mut busy, "/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // let it reach the handler

    let exited = server.exited();
    server.signal(Signal::Quit);
    assert!(
        until_refused(addr).await,
        "listener still accepts after SIGQUIT"
    );
    assert!(
        closed(&mut idle).await,
        "idle keep-alive connection not closed"
    );
    assert_eq!(
        server.exit_status(),
        None,
        "exited before in-flight finished"
    );

    let r = timeout(LIMIT, read_resp(&mut busy))
        .await
        .unwrap()
        .unwrap()
        .expect("in-flight request must be answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut busy).await);
    assert_eq!(timeout(LIMIT, exited).await.unwrap(), ServerExit::Graceful);
}

#[tokio::test]
async fn term_is_fast_in_flight_and_keep_alive_cut() {
    let mut cfg = ServeConfig::new(local(), "p", "n");
    cfg.delay = Duration::from_secs(5);
    let server = Server::start(cfg).await.unwrap();
    let addr = server.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    get(&mut idle, "/healthz").await.unwrap().unwrap();
    let mut busy = TcpStream::connect(addr).await.unwrap();
    send(&mut busy, "/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t = Instant::now();
    server.signal(Signal::Term);
    assert_eq!(
        timeout(LIMIT, server.exited()).await.unwrap(),
        ServerExit::Fast
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "fast shutdown waited for the 5 s request: {:?}",
        t.elapsed()
    );
    assert!(matches!(read_resp(&mut busy).await, Ok(None) | Err(_)));
    assert!(closed(&mut idle).await);
    assert!(until_refused(addr).await);
}

#[tokio::test]
async fn term_during_graceful_cuts_the_rest() {
    let mut cfg = ServeConfig::new(local(), "p", "n");
    cfg.delay = Duration::from_secs(5);
    let server = Server::start(cfg).await.unwrap();
    let mut busy = TcpStream::connect(server.addr()).await.unwrap();
    send(&mut busy, "/").await.unwrap();
    // Give the server time to accept and start the 5 s response (a loaded
    // CI machine took more than 100 ms once): QUIT must find it in flight.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.signal(Signal::Quit);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.exit_status(), None);
    server.signal(Signal::Term);
    assert_eq!(
        timeout(Duration::from_secs(2), server.exited())
            .await
            .unwrap(),
        ServerExit::Fast
    );
}

#[tokio::test]
async fn other_signals_are_ignored_and_kill_ends_everything() {
    let server = Server::start(ServeConfig::new(local(), "p", "n"))
        .await
        .unwrap();
    server.signal(Signal::from_number(libc::SIGUSR1));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    assert_eq!(get(&mut s, "/").await.unwrap().unwrap().status, 200);
    server.signal(Signal::Kill);
    assert_eq!(
        timeout(LIMIT, server.exited()).await.unwrap(),
        ServerExit::Killed
    );
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn pause_stops_answering_until_resume_and_defers_term() {
    let server = Server::start(ServeConfig::new(local(), "p", "n"))
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    get(&mut s, "/").await.unwrap().unwrap();
    server.pause();
    send(&mut s, "/").await.unwrap();
    assert!(
        timeout(Duration::from_millis(400), read_resp(&mut s))
            .await
            .is_err(),
        "a paused server answered"
    );
    server.signal(Signal::Quit);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.exit_status(),
        None,
        "a stopped process acted on a signal"
    );
    server.resume();
    let r = timeout(LIMIT, read_resp(&mut s))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        timeout(LIMIT, server.exited()).await.unwrap(),
        ServerExit::Graceful
    );
}

#[tokio::test]
async fn dropping_the_handle_kills_the_server() {
    let server = Server::start(ServeConfig::new(local(), "p", "n"))
        .await
        .unwrap();
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    get(&mut s, "/").await.unwrap().unwrap();
    drop(server);
    assert!(closed(&mut s).await);
    assert!(until_refused(addr).await);
}

/// The binary with real signals: SIGQUIT finishes the in-flight request,
/// SIGTERM cuts it.
#[tokio::test]
async fn binary_maps_real_signals() {
    for (signo, answered) in [(libc::SIGQUIT, true), (libc::SIGTERM, false)] {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = tokio::process::Command::from(crate::zdt_child())
            .args(["serve", "--listen", &addr.to_string(), "--delay", "600ms"])
            .env("POD_NAME", "env-pod")
            .env("NODE_NAME", "env-node")
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + LIMIT;
        let mut s = loop {
            match TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("zdt serve did not come up: {e}"),
            }
        };
        let r = get(&mut s, "/healthz").await.unwrap().unwrap();
        assert_eq!(r.header("x-pod"), Some("env-pod"));
        assert_eq!(r.header("x-node"), Some("env-node"));
        send(&mut s, "/").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id().unwrap() as i32, signo) };
        let r = timeout(LIMIT, read_resp(&mut s)).await.unwrap();
        if answered {
            let r = r.unwrap().expect("SIGQUIT must let the request finish");
            assert_eq!(r.status, 200);
        } else {
            assert!(matches!(r, Ok(None) | Err(_)), "SIGTERM answered: {r:?}");
        }
        let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "signal {signo}: {status:?}");
    }
}
