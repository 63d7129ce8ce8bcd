//! zdt-tiny-server: a small HTTP server standing in for "your own service"
//! in `scenarios/own-service.yaml`. Its one interesting property is what it
//! does on SIGTERM, the signal Kubernetes stops a container with:
//!
//! - `--shutdown bad`: stop at once — the listening socket and every open
//!   connection close with the process, as a server that exits on SIGTERM
//!   without a handler does. Connections kube-proxy still sends it are
//!   refused; requests in flight are cut.
//! - `--shutdown graceful`: keep serving for `--drain` seconds (the time
//!   endpoint removal takes to reach every node and load balancer), then
//!   stop accepting, finish the requests in flight, answer keep-alive
//!   clients with `Connection: close`, and exit 0.
//!
//! It listens on `--listen ADDR`, else `$POD_IP:$PORT` (PORT 8080), the
//! pod's own address in the emulator's network. `GET /healthz` answers 200
//! until shutdown starts, 503 after; every other path 200 with the pod's
//! name. Only the standard library and libc: a user's server, not zdt's.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Bad,
    Graceful,
}

struct Options {
    listen: SocketAddr,
    shutdown: Shutdown,
    drain: Duration,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "zdt-tiny-server: {why}\nusage: zdt-tiny-server [--listen IP:PORT] [--shutdown bad|graceful] [--drain SECONDS]\n(--listen defaults to $POD_IP:$PORT, PORT 8080)"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut listen = None;
    let mut shutdown = Shutdown::Graceful;
    let mut drain = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => {
                let v = value();
                listen = Some(
                    v.parse()
                        .unwrap_or_else(|_| usage(&format!("--listen {v}: not IP:PORT"))),
                );
            }
            "--shutdown" => {
                shutdown = match value().as_str() {
                    "bad" => Shutdown::Bad,
                    "graceful" => Shutdown::Graceful,
                    other => usage(&format!("--shutdown {other}: use bad or graceful")),
                }
            }
            "--drain" => {
                let v = value();
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .unwrap_or_else(|| usage(&format!("--drain {v}: not a number of seconds")));
                drain = Duration::from_secs_f64(secs);
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let listen = listen.unwrap_or_else(|| {
        let ip = std::env::var("POD_IP")
            .unwrap_or_else(|_| usage("no --listen and no POD_IP in the environment"));
        let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
        format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|_| usage(&format!("POD_IP {ip} / PORT {port}: not an address")))
    });
    Options {
        listen,
        shutdown,
        drain,
    }
}

/// Shared between the acceptor, the connections and the signal thread.
struct State {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    name: String,
}

fn main() {
    let opts = options();
    // SIGTERM is taken by one thread with sigwait, so it is blocked in
    // every thread, which inherit the mask from here.
    let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let listener = TcpListener::bind(opts.listen).unwrap_or_else(|e| {
        eprintln!("zdt-tiny-server: cannot listen on {}: {e}", opts.listen);
        std::process::exit(1)
    });
    let state = Arc::new(State {
        stopping: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        name: std::env::var("HOSTNAME").unwrap_or_else(|_| "tiny".into()),
    });
    let mode = match opts.shutdown {
        Shutdown::Bad => "bad (exit at once on SIGTERM)",
        Shutdown::Graceful => "graceful",
    };
    println!(
        "zdt-tiny-server {} listening on {}, shutdown {mode}",
        state.name, opts.listen
    );

    let fd = listener.as_raw_fd();
    {
        let state = state.clone();
        std::thread::spawn(move || {
            let mut signo = 0;
            // SAFETY: waits for the blocked SIGTERM.
            unsafe { libc::sigwait(&set, &mut signo) };
            println!("zdt-tiny-server: SIGTERM");
            if opts.shutdown == Shutdown::Bad {
                std::process::exit(0);
            }
            state.stopping.store(true, Ordering::SeqCst);
            std::thread::sleep(opts.drain);
            // Wakes the blocked accept: no new connections from here on.
            // SAFETY: shutdown(2) on the listener's descriptor, which lives
            // until the process exits.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        });
    }

    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let state = state.clone();
                std::thread::spawn(move || serve(s, &state));
            }
            Err(_) if state.stopping.load(Ordering::SeqCst) => break,
            Err(e) => {
                eprintln!("zdt-tiny-server: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // Finish what is in flight (bounded: the kubelet kills us at the end
    // of the grace period anyway).
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("zdt-tiny-server: drained, exiting");
}

/// One connection: requests until the client closes, or until shutdown
/// (then the next answer says `Connection: close`).
fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Idle keep-alive connection: closed once draining ends.
                if state.stopping.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut close = false;
        let mut body_len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
        }
        if body_len > 0 {
            let mut body = vec![0u8; body_len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
        }
        let stopping = state.stopping.load(Ordering::SeqCst);
        let close = close || stopping;
        let (status, body) = match (path.as_str(), stopping) {
            ("/healthz", true) => ("503 Service Unavailable", "shutting down\n".to_owned()),
            ("/healthz", false) => ("200 OK", "ok\n".to_owned()),
            _ => ("200 OK", format!("hello from {}\n", state.name)),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Pod: {}\r\n{}\r\n",
            body.len(),
            state.name,
            if close { "Connection: close\r\n" } else { "" }
        );
        let ok = out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(body.as_bytes()))
            .is_ok();
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok || close {
            return;
        }
    }
}
