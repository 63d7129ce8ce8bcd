//! Every request in flight, driven by the attack loop itself: sent at its
//! due time from the loop, its response read at the loop's wake-ups (see
//! [`crate::polled`]), its timeout a deadline the loop checks. No task,
//! timer entry or cancellation waiter per request: on the benchmark VM
//! those (and the extra turn of the runtime they cost) were a quarter of
//! the generator's CPU per keep-alive request.
//!
//! When the requests in flight are few and all wait for their responses
//! (at 5000/s with keep-alive: one), a wake-up reads their sockets
//! directly instead of asking the epoll set which of them got something
//! (one syscall less per request). The set is still asked whenever a
//! request connects or writes, when more are in flight, and before an
//! idle pooled connection that sat through a wake-up is reused: a FIN that
//! reached it while idle is only in the set. A FIN that came with a
//! response is seen by the read itself ([`crate::polled::Received::more`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aggregate::{ErrorKey, Record};
use super::context::RequestContext;
use super::http::{Detail, Failure, Response, ResponseReader, Stage};
use super::lock::lock;
use super::polled::{Conn, Poller, Ready, EVENTS};

/// At most this many requests in flight are read directly at a wake-up;
/// with more, one `epoll_wait` says which to read.
const DIRECT_MAX: usize = 4;
use super::summary::ErrorKind;

/// A slot in one of the engine's tables, with the generation that tells a
/// reused slot from the one an old reference meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    fn token(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.index)
    }

    fn of(token: u64) -> Self {
        Self {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

/// A table whose slots are reused, named by [`Key`]s.
struct Slots<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Slots<T> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, value: T) -> Key {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.0 = slot.0.wrapping_add(1);
                slot.1 = Some(value);
                Key {
                    index,
                    generation: slot.0,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 slots");
                self.slots.push((0, Some(value)));
                Key {
                    index,
                    generation: 0,
                }
            }
        }
    }

    fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index as usize) {
            Some((generation, value)) if *generation == key.generation => value.as_ref(),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index as usize) {
            Some((generation, value)) if *generation == key.generation => value.as_mut(),
            _ => None,
        }
    }

    fn remove(&mut self, key: Key) -> Option<T> {
        match self.slots.get_mut(key.index as usize) {
            Some((generation, value)) if *generation == key.generation => {
                let v = value.take();
                if v.is_some() {
                    self.free.push(key.index);
                }
                v
            }
            _ => None,
        }
    }

    fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, &(generation, _))| Key {
                index: i as u32,
                generation,
            })
            .collect()
    }
}

/// One connection and what it is doing.
struct Slot {
    conn: Conn,
    /// Taken from (and given back to) the keep-alive pool.
    pooled: bool,
    /// The request on it, if any (an idle pooled connection has none).
    request: Option<Key>,
    /// Watched for writing too (a handshake or a write not done yet).
    writes: bool,
    /// The server closed its side: not to be pooled again.
    closed: bool,
    /// The turn in which it last went idle.
    idle_from: u64,
}

/// Where a request goes on its current hop.
struct Hop {
    addr: SocketAddr,
    pooled: bool,
    head_only: bool,
    /// A redirect's request (the attack's own request when `None`), and how
    /// many redirects were followed.
    redirected: Option<Box<Redirected>>,
}

struct Redirected {
    request: Vec<u8>,
    hops: u32,
    target: crate::Target,
    load: crate::Load,
}

/// One request, from its due time to its recorded result.
struct Exchange {
    seq: u64,
    due: Duration,
    sent_at: Instant,
    hop: Hop,
    conn: Option<Key>,
    /// The connection came from the pool: a failure before any response
    /// may be a stale connection, to go again on a fresh one.
    reused: bool,
    stage: Stage,
    written: usize,
    reader: ResponseReader,
    buf: Vec<u8>,
    replays: u32,
    /// When the last response bytes arrived (the kernel's stamp).
    arrived: Option<Instant>,
    /// The local address of the connection it last used.
    local: Option<SocketAddr>,
    /// Its place in [`Engine::flight`].
    at: usize,
}

/// The requests in flight and the connections they use.
pub(crate) struct Engine {
    context: Arc<RequestContext>,
    poller: Poller,
    ready: Vec<(u64, Ready)>,
    conns: Slots<Slot>,
    requests: Slots<Exchange>,
    /// Idle keep-alive connections; the most recently used is reused first,
    /// so few connections stay hot.
    idle: Vec<Key>,
    /// Pooled connections holding a request (at most the pool cap).
    pooled_busy: usize,
    /// Requests waiting for a pooled connection, oldest first.
    waiting: VecDeque<Key>,
    /// Deadlines in send order (so in time order), each request's once.
    deadlines: VecDeque<(Duration, Key)>,
    in_flight: usize,
    /// The requests in flight, in no order.
    flight: Vec<Key>,
    /// The keys a direct read goes through (kept for its allocation).
    direct: Vec<Key>,
    /// Turns so far, and the last one that asked the epoll set.
    turns: u64,
    asked: u64,
    /// Response buffers of finished requests, reused.
    spare: Vec<Vec<u8>>,
    /// Redirect targets resolved so far.
    resolved: HashMap<String, SocketAddr>,
    /// A read returned bytes since the last [`Engine::turn`].
    read: bool,
}

impl Engine {
    pub fn new(context: Arc<RequestContext>) -> io::Result<Self> {
        Ok(Self {
            context,
            poller: Poller::new()?,
            ready: Vec::new(),
            conns: Slots::new(),
            requests: Slots::new(),
            idle: Vec::new(),
            pooled_busy: 0,
            waiting: VecDeque::new(),
            deadlines: VecDeque::new(),
            in_flight: 0,
            flight: Vec::new(),
            direct: Vec::new(),
            turns: 0,
            asked: 0,
            spare: Vec::new(),
            resolved: HashMap::new(),
            read: false,
        })
    }

    /// Requests sent and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The earliest deadline of a request in flight, after t0.
    pub fn next_deadline(&mut self) -> Option<Duration> {
        while let Some(&(at, key)) = self.deadlines.front() {
            if self.requests.get_mut(key).is_some() {
                return Some(at);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Sends request `seq`, due at `due`, now.
    pub fn start(&mut self, seq: u64, due: Duration) {
        let context = &self.context;
        let sent_at = Instant::now();
        let sent = sent_at.saturating_duration_since(context.t0);
        let exchange = Exchange {
            seq,
            due,
            sent_at,
            hop: Hop {
                addr: context.addr,
                pooled: context.pool_cap.is_some(),
                head_only: context.head_only,
                redirected: None,
            },
            conn: None,
            reused: false,
            stage: Stage::Connect,
            written: 0,
            reader: ResponseReader::new(context.head_only),
            buf: self.spare.pop().unwrap_or_default(),
            replays: 0,
            arrived: None,
            local: None,
            at: self.flight.len(),
        };
        let key = self.requests.insert(exchange);
        self.flight.push(key);
        // The timeout covers every hop and replay.
        self.deadlines.push_back((sent + self.context.timeout, key));
        self.in_flight += 1;
        self.hop(key);
    }

    /// Reads what arrived, goes on with the requests it concerns and fails
    /// the ones past their deadline; true when a read returned bytes (a
    /// poll that found nothing can back off).
    pub fn turn(&mut self) -> bool {
        self.turns += 1;
        if self.in_flight > 0 && !self.read_directly() {
            self.ask();
        }
        let now = self.context.t0.elapsed();
        while let Some(&(at, key)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(stage) = self.requests.get_mut(key).map(|e| e.stage) {
                self.fail(key, Failure::timeout(stage), false);
            }
        }
        std::mem::take(&mut self.read)
    }

    /// Reads the requests in flight straight from their sockets when they
    /// are few and all wait for a response; false (nothing read) when the
    /// epoll set is to be asked instead.
    fn read_directly(&mut self) -> bool {
        let waits = |e: &Exchange| e.conn.is_some() && matches!(e.stage, Stage::Head | Stage::Body);
        if self.flight.len() > DIRECT_MAX
            || !self
                .flight
                .iter()
                .all(|&key| self.requests.get(key).is_some_and(waits))
        {
            return false;
        }
        let mut keys = std::mem::take(&mut self.direct);
        keys.clear();
        keys.extend_from_slice(&self.flight);
        for &key in &keys {
            // A read before may have moved this request on (a replay).
            if self.requests.get(key).is_some_and(waits) {
                self.read(key);
            }
        }
        self.direct = keys;
        true
    }

    /// Asks the epoll set which connections got something, and goes on
    /// with them.
    fn ask(&mut self) {
        self.asked = self.turns;
        let mut ready = std::mem::take(&mut self.ready);
        loop {
            if self.poller.ready(&mut ready).is_err() {
                break;
            }
            for &(token, r) in &ready {
                self.on_ready(Key::of(token), r);
            }
            if ready.len() < EVENTS {
                break;
            }
        }
        self.ready = ready;
    }

    /// Every request in flight ends as cancelled.
    pub fn cancel(&mut self) {
        for key in self.requests.keys() {
            if let Some(stage) = self.requests.get_mut(key).map(|e| e.stage) {
                let f = Failure::new(ErrorKind::Cancelled, stage, Detail::Cancelled);
                self.fail(key, f, false);
            }
        }
    }

    /// Puts request `key` on a connection for its current hop: an idle
    /// pooled one, else a fresh one (pooled while the pool has room; else it
    /// waits for one).
    fn hop(&mut self, key: Key) {
        let Some(e) = self.requests.get_mut(key) else {
            return;
        };
        e.stage = Stage::Connect;
        e.written = 0;
        e.reader = ResponseReader::new(e.hop.head_only);
        e.buf.clear();
        let pooled = e.hop.pooled;
        if pooled {
            // An idle connection that sat through a wake-up may have been
            // closed meanwhile, which only the epoll set knows: asked once
            // per turn, as long as such a connection is about to be used.
            let stale = |conn| {
                self.conns
                    .get(conn)
                    .is_some_and(|s: &Slot| s.idle_from < self.turns)
            };
            if self.asked < self.turns && self.idle.last().is_some_and(|&c| stale(c)) {
                self.ask();
            }
            if let Some(conn) = self.idle.pop() {
                self.attach(key, conn, true);
                self.write(key);
                return;
            }
            let cap = self.context.pool_cap.unwrap_or(usize::MAX);
            if self.pooled_busy >= cap {
                self.waiting.push_back(key);
                return;
            }
        }
        self.dial(key, pooled);
    }

    fn attach(&mut self, key: Key, conn: Key, reused: bool) {
        let slot = self.conns.get_mut(conn).expect("a live connection");
        slot.request = Some(key);
        let local = slot.conn.local_addr();
        if slot.pooled {
            self.pooled_busy += 1;
        }
        let e = self.requests.get_mut(key).expect("a live request");
        e.conn = Some(conn);
        e.reused = reused;
        e.local = local;
    }

    fn dial(&mut self, key: Key, pooled: bool) {
        let net = &self.context.net;
        let e = self.requests.get_mut(key).expect("a live request");
        let addr = e.hop.addr;
        let mut local = None;
        let dialed = Conn::dial(net, addr, &mut local, pooled);
        e.local = local;
        let (conn, connecting) = match dialed {
            Ok(c) => c,
            Err(err) => return self.fail(key, Failure::io(Stage::Connect, &err), false),
        };
        let conn = self.conns.insert(Slot {
            conn,
            pooled,
            request: None,
            writes: connecting,
            closed: false,
            idle_from: 0,
        });
        let slot = self.conns.get_mut(conn).expect("just inserted");
        if let Err(err) = self.poller.add(&slot.conn, conn.token(), connecting) {
            self.conns.remove(conn);
            return self.fail(key, Failure::io(Stage::Connect, &err), false);
        }
        self.attach(key, conn, false);
        if !connecting {
            self.write(key);
        }
    }

    /// Writes what is left of the request; the response is read at a later
    /// turn (it cannot be there before the server has run).
    fn write(&mut self, key: Key) {
        let context = &self.context;
        let Some(e) = self.requests.get_mut(key) else {
            return;
        };
        let conn = e.conn.expect("a request that writes has a connection");
        let slot = self.conns.get_mut(conn).expect("a live connection");
        let request: &[u8] = match &e.hop.redirected {
            Some(r) => &r.request,
            None => &context.request,
        };
        e.stage = Stage::Write;
        while e.written < request.len() {
            match slot.conn.write(&request[e.written..]) {
                Ok(n) => e.written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if !slot.writes {
                        slot.writes = true;
                        if let Err(err) = self.poller.watch_writes(&slot.conn, conn.token(), true) {
                            return self.fail(key, Failure::io(Stage::Write, &err), true);
                        }
                    }
                    return;
                }
                Err(err) => return self.fail(key, Failure::io(Stage::Write, &err), true),
            }
        }
        e.stage = Stage::Head;
    }

    fn on_ready(&mut self, conn: Key, ready: Ready) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        // The edge of a FIN is reported once, often with the response it
        // follows: remembered, so the connection is not pooled again (a
        // request put on it would wait for an event that already came —
        // behind a proxy that half-closes, until its timeout).
        slot.closed |= ready.closed;
        let request = slot.request;
        let Some(key) = request else {
            // An idle pooled connection with something to read was closed
            // by the server (or sent what no request asked for): it cannot
            // carry a request, so it leaves the pool now, as Go's transport
            // and browsers drop theirs.
            if ready.read || ready.closed {
                self.idle.retain(|&k| k != conn);
                self.conns.remove(conn);
            }
            return;
        };
        let stage = self.requests.get_mut(key).expect("a live request").stage;
        match stage {
            Stage::Connect if ready.write => {
                let slot = self.conns.get_mut(conn).expect("a live connection");
                if let Err(err) = slot.conn.handshake() {
                    return self.fail(key, Failure::io(Stage::Connect, &err), false);
                }
                self.write(key);
            }
            Stage::Write if ready.write => self.write(key),
            Stage::Head | Stage::Body if ready.read => self.read(key),
            _ => {}
        }
    }

    fn read(&mut self, key: Key) {
        loop {
            let e = self.requests.get_mut(key).expect("a live request");
            let conn = e.conn.expect("a request that reads has a connection");
            let slot = self.conns.get_mut(conn).expect("a live connection");
            e.reader.room(&mut e.buf);
            let (n, more) = match slot.conn.recv(&mut e.buf) {
                Ok(got) => {
                    if got.n > 0 {
                        e.arrived = got.arrived;
                        self.read = true;
                    }
                    (got.n, got.more)
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    let f = Failure::io(e.reader.stage(), &err);
                    return self.fail(key, f, true);
                }
            };
            e.stage = e.reader.stage();
            match e.reader.read(&mut e.buf, n) {
                Ok(None) => {}
                Ok(Some(response)) => {
                    // The peer closed behind the response (or sent what
                    // nobody asked for): not to be pooled again.
                    slot.closed |= more;
                    return self.answered(key, response);
                }
                Err(f) => return self.fail(key, f, true),
            }
        }
    }

    /// Lets go of the request's connection: back to the pool when it can
    /// carry another request, else closed. A request waiting for the pool
    /// goes next.
    fn release(&mut self, key: Key, keep: bool) {
        let Some(conn) = self.requests.get_mut(key).and_then(|e| e.conn.take()) else {
            return;
        };
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        slot.request = None;
        let pooled = slot.pooled;
        if pooled {
            self.pooled_busy -= 1;
        }
        if pooled && keep && !slot.closed {
            slot.idle_from = self.turns;
            self.idle.push(conn);
        } else {
            self.conns.remove(conn);
        }
        if pooled {
            while let Some(next) = self.waiting.pop_front() {
                if self.requests.get_mut(next).is_some() {
                    self.hop(next);
                    break;
                }
            }
        }
    }

    fn answered(&mut self, key: Key, response: Response) {
        self.release(key, response.reusable);
        let context = self.context.clone();
        let follow = match (&context.follow, response.redirect()) {
            (Some(follow), Some(location)) => Some((follow, location)),
            _ => None,
        };
        let Some((follow, location)) = follow else {
            return self.finish(key, Ok(response));
        };
        let e = self.requests.get_mut(key).expect("a live request");
        let hops = e.hop.redirected.as_ref().map_or(0, |r| r.hops);
        if hops == follow.max {
            let f = Failure::new(
                ErrorKind::BadResponse,
                Stage::Head,
                Detail::TooManyRedirects(follow.max),
            );
            return self.finish(key, Err(f));
        }
        let bad = Failure::new(ErrorKind::BadResponse, Stage::Head, Detail::BadLocation);
        let (target, load) = match &e.hop.redirected {
            Some(r) => (&r.target, &r.load),
            None => (&follow.target, &follow.load),
        };
        let Some(location) = std::str::from_utf8(&e.buf[location]).ok() else {
            return self.finish(key, Err(bad));
        };
        let Some((next, path)) = redirect_target(target, &load.path, location.trim()) else {
            return self.finish(key, Err(bad));
        };
        let mut load = load.clone();
        let addr = if next.authority == target.authority {
            e.hop.addr
        } else {
            match resolve(&mut self.resolved, &next.authority) {
                Some(addr) => addr,
                None => return self.finish(key, Err(bad)),
            }
        };
        // As Go's client: 301/302/303 go on as GET without a body (HEAD
        // stays HEAD); 307/308 repeat the method and body.
        if matches!(response.status, 301..=303) && load.method != ::http::Method::HEAD {
            load.method = ::http::Method::GET;
            load.body.clear();
        }
        load.path = path;
        // Only the attack's own target shares its keep-alive pool.
        let pooled = addr == self.context.addr && self.context.pool_cap.is_some();
        let request = next.request_bytes(&crate::Load {
            keep_alive: load.keep_alive && pooled,
            ..load.clone()
        });
        let e = self.requests.get_mut(key).expect("a live request");
        e.hop = Hop {
            addr,
            pooled,
            head_only: load.method == ::http::Method::HEAD,
            redirected: Some(Box::new(Redirected {
                request,
                hops: hops + 1,
                target: next,
                load,
            })),
        };
        self.hop(key);
    }

    /// A failure of request `key`: on a reused connection that turned out
    /// closed before any response (`may_replay`), the request goes again on
    /// a fresh one when the attack allows it.
    fn fail(&mut self, key: Key, f: Failure, may_replay: bool) {
        let Some(e) = self.requests.get_mut(key) else {
            return;
        };
        if may_replay && e.reused && self.context.replay.allows(&f) {
            e.replays += 1;
            let pooled = e.hop.pooled;
            self.release(key, false);
            let e = self.requests.get_mut(key).expect("a live request");
            e.stage = Stage::Connect;
            e.written = 0;
            e.reader = ResponseReader::new(e.hop.head_only);
            e.buf.clear();
            return self.dial(key, pooled);
        }
        self.release(key, false);
        self.finish(key, Err(f));
    }

    /// Records request `key`'s result and forgets it.
    fn finish(&mut self, key: Key, outcome: Result<Response, Failure>) {
        let Some(mut e) = self.requests.remove(key) else {
            return;
        };
        self.in_flight -= 1;
        debug_assert_eq!(self.flight[e.at], key);
        self.flight.swap_remove(e.at);
        if let Some(&moved) = self.flight.get(e.at) {
            self.requests
                .get_mut(moved)
                .expect("a request in flight")
                .at = e.at;
        }
        let end = match (&outcome, e.arrived) {
            // Read at a later wake-up: the response ended when it arrived.
            (Ok(_), Some(arrived)) => arrived.max(e.sent_at),
            _ => Instant::now(),
        };
        let t0 = self.context.t0;
        let mut record = Record {
            seq: e.seq,
            due: e.due,
            sent: Some(e.sent_at.saturating_duration_since(t0)),
            end: end.saturating_duration_since(t0),
            status: 0,
            failure: None,
            bytes_in: 0,
            replays: e.replays,
            node: None,
            pod: None,
            local: outcome.is_err().then_some(e.local).flatten(),
        };
        match &outcome {
            Ok(r) => {
                record.status = r.status;
                record.bytes_in = r.body;
                if !(200..400).contains(&r.status) {
                    record.failure = Some(ErrorKey::Status(r.status));
                }
                record.node = r.node.clone().map(|range| &e.buf[range]);
                record.pod = r.pod.clone().map(|range| &e.buf[range]);
            }
            Err(f) => record.failure = Some(ErrorKey::Failure(*f)),
        }
        lock(&self.context.agg).record(&record);
        e.buf.clear();
        self.spare.push(e.buf);
        if self.in_flight == 0 {
            self.deadlines.clear();
        }
    }
}

/// The address a redirect's `host:port` names: an IP address as it is,
/// a name resolved once per attack (in the loop, blocking: a redirect to
/// another host name is rare, and its next requests find it resolved).
fn resolve(cache: &mut HashMap<String, SocketAddr>, authority: &str) -> Option<SocketAddr> {
    if let Some(&addr) = cache.get(authority) {
        return Some(addr);
    }
    let addr = match authority.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => super::http::first_ipv4(authority.to_socket_addrs().ok()?)?,
    };
    cache.insert(authority.to_string(), addr);
    Some(addr)
}

/// Where a redirect's `Location` points, from the request that got it: an
/// absolute `http://` URL, or a path on the same target (absolute, or
/// relative to the current path's directory). `None` for what the
/// generator cannot follow (https, another scheme, garbage).
fn redirect_target(
    current: &crate::Target,
    current_path: &str,
    location: &str,
) -> Option<(crate::Target, String)> {
    if location.contains("://") {
        return crate::Target::parse(location).ok();
    }
    if location.starts_with("//") {
        return crate::Target::parse(&format!("http:{location}")).ok();
    }
    if location.starts_with('/') {
        return Some((current.clone(), location.to_string()));
    }
    if location.is_empty() || location.contains(char::is_whitespace) {
        return None;
    }
    let dir = current_path
        .split(['?', '#'])
        .next()
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(dir, _)| dir);
    Some((current.clone(), format!("{dir}/{location}")))
}
