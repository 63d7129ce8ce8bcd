//! The backend pool: health state per backend, selection for new
//! connections, and the admin operations. Everything that changes a
//! backend's state goes through here, so every change emits its event.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backend::{BackendSpec, ProbeTarget};
use super::probe::{Probe, ProbeFailure};
use super::status::{AdminError, BackendStatus, Health};
use super::LbConfig;
use zdt_core::events::{EventSink, Source};
use zdt_core::provenance::{ConnRecord, Provenance};

/// State shared by the accept loop, connection tasks, probe tasks and the
/// admin API.
pub(crate) struct PoolState {
    pub config: LbConfig,
    pub frontend: SocketAddr,
    pub events: EventSink,
    pub cancel: CancellationToken,
    backends: RwLock<Vec<Arc<Backend>>>,
    rng: AtomicU64,
    /// Whether the pool currently has no eligible healthy backend (so new
    /// connections fail open or are rejected); events fire on its edges.
    no_healthy: AtomicBool,
    /// Bumped on every state change, for waiters (`wait_healthy`).
    changed: watch::Sender<u64>,
    /// Each task holds a clone; `None` once shutdown began so no new task
    /// can delay it.
    tasks: Mutex<Option<mpsc::Sender<()>>>,
    /// Where dropped connections are held when not in this process.
    pub holder: Option<super::hold::Holder>,
    /// Every accepted connection's route, when the config asks for it.
    connections: Option<Mutex<Vec<ConnRecord>>>,
}

pub(crate) struct Backend {
    pub spec: BackendSpec,
    /// Stops this backend's probe task (on removal or shutdown).
    pub probe_cancel: CancellationToken,
    pub healthy: AtomicBool,
    pub draining: AtomicBool,
    pub removed: AtomicBool,
    pub active: AtomicUsize,
    pub total: AtomicU64,
    /// Cancelled when the drain (or removal) timeout expires: every
    /// connection on this backend is then cut. Replaced on restore.
    pub cut: Mutex<CancellationToken>,
    drain_generation: AtomicU64,
    probe: Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    health: Health,
    last_ok: Option<bool>,
    last_error: Option<String>,
    consecutive_successes: u32,
    consecutive_failures: u32,
    probes: u64,
    last_probe_at: Option<Duration>,
}

/// Counts a connection on its backend for as long as it lives.
pub(crate) struct ActiveGuard {
    pool: Arc<PoolState>,
    backend: Arc<Backend>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let left = self.backend.active.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0
            && self.backend.draining.load(Ordering::Acquire)
            && !self.pool.cancel.is_cancelled()
        {
            let name = &self.backend.spec.name;
            self.pool.emit(
                "Drained",
                name,
                "the last connection of the draining backend closed".to_string(),
            );
            self.pool.bump();
        }
    }
}

pub(crate) enum Pick {
    Backend(Arc<Backend>),
    /// No backend may take the connection: reset it.
    Reject,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64: a seeded, lock-free sequence good enough for spreading
/// connections and probe phases.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PoolState {
    pub fn new(
        config: LbConfig,
        frontend: SocketAddr,
        events: EventSink,
        cancel: CancellationToken,
        done: mpsc::Sender<()>,
    ) -> Arc<Self> {
        let seed = config.seed;
        let holder = config.hold_in.as_deref().and_then(|exe| {
            super::hold::Holder::spawn(exe)
                .map_err(|e| {
                    tracing::warn!(
                        "cannot start `{} {}` ({e}); dropped connections are held in this process",
                        exe.display(),
                        super::hold::SUBCOMMAND
                    )
                })
                .ok()
        });
        let config_records = config.record_connections;
        Arc::new(Self {
            config,
            frontend,
            events,
            cancel,
            backends: RwLock::new(Vec::new()),
            rng: AtomicU64::new(mix(seed)),
            no_healthy: AtomicBool::new(false),
            changed: watch::channel(0).0,
            tasks: Mutex::new(Some(done)),
            holder,
            connections: config_records.then(|| Mutex::new(Vec::new())),
        })
    }

    /// Record where a connection went (a no-op unless recording).
    pub fn record(&self, client: SocketAddr, at: Duration, provenance: Provenance) {
        if let Some(log) = &self.connections {
            log.lock().unwrap().push(ConnRecord {
                client,
                at,
                provenance,
            });
        }
    }

    pub fn take_connections(&self) -> Vec<ConnRecord> {
        self.connections
            .as_ref()
            .map(|log| std::mem::take(&mut *log.lock().unwrap()))
            .unwrap_or_default()
    }

    pub fn random(&self) -> u64 {
        mix(self
            .rng
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA))
    }

    /// A token for a new task, or `None` when the LB is shutting down.
    pub fn task_token(&self) -> Option<mpsc::Sender<()>> {
        if self.cancel.is_cancelled() {
            return None;
        }
        self.tasks.lock().unwrap().clone()
    }

    pub fn close_tasks(&self) {
        self.tasks.lock().unwrap().take();
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn emit(&self, reason: &str, name: &str, message: String) {
        self.events.emit(
            Source::Lb,
            reason,
            format!("node/{name}"),
            Some(name),
            message,
        );
    }

    fn find(&self, name: &str) -> Result<Arc<Backend>, AdminError> {
        self.backends
            .read()
            .unwrap()
            .iter()
            .find(|b| b.spec.name == name)
            .cloned()
            .ok_or_else(|| AdminError::NotFound(name.to_owned()))
    }

    /// Choose the backend for a new connection from `client`.
    pub fn pick(self: &Arc<Self>, client: SocketAddr) -> Pick {
        let list = self.backends.read().unwrap();
        let eligible = |b: &&Arc<Backend>| !b.draining.load(Ordering::Acquire);
        let healthy = |b: &&Arc<Backend>| eligible(b) && b.healthy.load(Ordering::Acquire);
        let n = list.iter().filter(healthy).count();
        let chosen = if n > 0 {
            let i = self.choose(client, n);
            list.iter().filter(healthy).nth(i)
        } else if self.config.fail_open {
            let all = list.iter().filter(eligible).count();
            if all == 0 {
                None
            } else {
                let i = self.choose(client, all);
                list.iter().filter(eligible).nth(i)
            }
        } else {
            None
        };
        match chosen {
            Some(b) => Pick::Backend(b.clone()),
            None => Pick::Reject,
        }
    }

    /// The backends new connections go to now, as [`PoolState::pick`]
    /// chooses among them: the healthy ones not draining; with none, when
    /// failing open, every one not draining.
    fn routed(&self) -> Vec<String> {
        let list = self.backends.read().unwrap();
        let eligible = |b: &&Arc<Backend>| !b.draining.load(Ordering::Acquire);
        let healthy: Vec<String> = list
            .iter()
            .filter(eligible)
            .filter(|b| b.healthy.load(Ordering::Acquire))
            .map(|b| b.spec.name.clone())
            .collect();
        if !healthy.is_empty() || !self.config.fail_open {
            return healthy;
        }
        list.iter()
            .filter(eligible)
            .map(|b| b.spec.name.clone())
            .collect()
    }

    /// Tell a pass-through data path where new connections go, before the
    /// change is reported: an event is never earlier than the packets'
    /// new way.
    fn reroute(&self) {
        if let Some(p) = &self.config.pass_through {
            if let Err(e) = p.0.route_to(&self.routed()) {
                tracing::warn!("lb: cannot program the pass-through data path: {e}");
            }
        }
    }

    fn choose(&self, client: SocketAddr, n: usize) -> usize {
        let r = match self.config.selection {
            super::Selection::Random => self.random(),
            super::Selection::Hash => {
                // DefaultHasher::new() has fixed keys: stable across runs.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (client, self.frontend, self.config.seed).hash(&mut h);
                h.finish()
            }
        };
        (r % n as u64) as usize
    }

    pub fn track(self: &Arc<Self>, backend: &Arc<Backend>) -> ActiveGuard {
        backend.active.fetch_add(1, Ordering::AcqRel);
        backend.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            pool: self.clone(),
            backend: backend.clone(),
        }
    }

    /// Re-evaluate "no healthy backend" after any change, emitting its edges.
    fn pool_changed(&self) {
        self.reroute();
        let list = self.backends.read().unwrap();
        let healthy = list
            .iter()
            .filter(|b| !b.draining.load(Ordering::Acquire) && b.healthy.load(Ordering::Acquire))
            .count();
        let total = list.len();
        drop(list);
        let none = total > 0 && healthy == 0;
        let was = self.no_healthy.swap(none, Ordering::AcqRel);
        if none && !was {
            let (reason, what) = if self.config.fail_open {
                (
                    "FailOpen",
                    "new connections go to every backend not draining",
                )
            } else {
                ("NoHealthyBackends", "new connections are reset")
            };
            self.events.emit(
                Source::Lb,
                reason,
                "lb/frontend",
                None,
                format!("no healthy backend among {total}: {what}"),
            );
        } else if !none && was {
            self.events.emit(
                Source::Lb,
                "HealthyBackendsAvailable",
                "lb/frontend",
                None,
                format!("{healthy} of {total} backends healthy again"),
            );
        }
        self.bump();
    }

    /// Record one probe result and apply the thresholds; a passing probe at
    /// start ([`InitialHealth::Ready`](super::InitialHealth)) counts as
    /// the whole healthy threshold.
    pub fn record_probe(&self, b: &Backend, result: Result<(), ProbeFailure>, which: Probe) {
        if b.removed.load(Ordering::Acquire) {
            return;
        }
        let settings = self.config.probe;
        let name = &b.spec.name;
        let target = describe(&b.spec.probe);
        let mut st = b.probe.lock().unwrap();
        st.probes += 1;
        st.last_probe_at = Some(self.events.clock().now());
        let ok = result.is_ok();
        let changed = st.last_ok != Some(ok);
        st.last_ok = Some(ok);
        let mut transition = None;
        match result {
            Ok(()) => {
                st.last_error = None;
                st.consecutive_successes += 1;
                st.consecutive_failures = 0;
                if changed {
                    self.emit("ProbeSucceeded", name, format!("probe {target} succeeded"));
                }
                if which == Probe::AtStart && st.health != Health::Healthy {
                    st.consecutive_successes =
                        st.consecutive_successes.max(settings.healthy_threshold);
                    st.health = Health::Healthy;
                    b.healthy.store(true, Ordering::Release);
                    transition = Some((
                        "Healthy",
                        format!(
                            "ready when the LB started (initial health `ready`): receives new connections \
                             without waiting for {} probes every {}",
                            settings.healthy_threshold, settings.interval
                        ),
                    ));
                } else if st.health != Health::Healthy
                    && st.consecutive_successes >= settings.healthy_threshold
                {
                    st.health = Health::Healthy;
                    b.healthy.store(true, Ordering::Release);
                    transition = Some((
                        "Healthy",
                        format!(
                            "{} consecutive successful probes: receives new connections",
                            st.consecutive_successes
                        ),
                    ));
                }
            }
            Err(e) => {
                st.consecutive_failures += 1;
                st.consecutive_successes = 0;
                if changed {
                    self.emit("ProbeFailed", name, format!("probe {target} failed: {e}"));
                }
                st.last_error = Some(e.to_string());
                if st.health != Health::Unhealthy
                    && st.consecutive_failures >= settings.unhealthy_threshold
                {
                    st.health = Health::Unhealthy;
                    b.healthy.store(false, Ordering::Release);
                    transition = Some((
                        "Unhealthy",
                        format!(
                            "{} consecutive failed probes: no new connections (established ones stay)",
                            st.consecutive_failures
                        ),
                    ));
                }
            }
        }
        drop(st);
        if let Some((reason, message)) = transition {
            self.reroute();
            self.emit(reason, name, message);
            self.pool_changed();
        } else {
            self.bump();
        }
    }

    pub fn status(&self, b: &Backend) -> BackendStatus {
        let st = b.probe.lock().unwrap();
        BackendStatus {
            name: b.spec.name.clone(),
            health: st.health,
            probe: describe(&b.spec.probe),
            last_probe: st
                .last_ok
                .map(|ok| if ok { "succeeded" } else { "failed" }.to_owned()),
            last_probe_error: st.last_error.clone(),
            last_probe_at: st.last_probe_at,
            probes: st.probes,
            consecutive_successes: st.consecutive_successes,
            consecutive_failures: st.consecutive_failures,
            active_connections: b.active.load(Ordering::Acquire),
            total_connections: b.total.load(Ordering::Relaxed),
            draining: b.draining.load(Ordering::Acquire),
        }
    }

    pub fn list(&self) -> Vec<BackendStatus> {
        let list = self.backends.read().unwrap().clone();
        list.iter().map(|b| self.status(b)).collect()
    }

    pub fn get(&self, name: &str) -> Result<BackendStatus, AdminError> {
        let b = self.find(name)?;
        Ok(self.status(&b))
    }

    pub fn healthy_count(&self) -> usize {
        self.backends
            .read()
            .unwrap()
            .iter()
            .filter(|b| b.healthy.load(Ordering::Acquire))
            .count()
    }

    /// Add a backend and start probing it. `at_lb_start`: one of the
    /// backends the LB starts with, which [`InitialHealth::Ready`]
    /// (super::InitialHealth) probes at once; one added later waits for
    /// its thresholds whatever the setting.
    pub fn add(self: &Arc<Self>, spec: BackendSpec, at_lb_start: bool) -> Result<(), AdminError> {
        if spec.name.is_empty() {
            return Err(AdminError::BadRequest(
                "backend name must not be empty".into(),
            ));
        }
        let token = self.task_token().ok_or(AdminError::ShuttingDown)?;
        let backend = Arc::new(Backend {
            probe_cancel: self.cancel.child_token(),
            healthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            cut: Mutex::new(self.cancel.child_token()),
            drain_generation: AtomicU64::new(0),
            probe: Mutex::new(ProbeState::default()),
            spec,
        });
        {
            let mut list = self.backends.write().unwrap();
            if list.iter().any(|b| b.spec.name == backend.spec.name) {
                return Err(AdminError::AlreadyExists(backend.spec.name.clone()));
            }
            list.push(backend.clone());
        }
        let interval = self.config.probe.interval.get();
        // Real LBs are not aligned with anything the run does: start each
        // backend's probes at a random phase within the interval.
        let phase = Duration::from_nanos(self.random() % (interval.as_nanos() as u64).max(1));
        let at_start = at_lb_start && self.config.initial_health == super::InitialHealth::Ready;
        self.emit(
            "Added",
            &backend.spec.name,
            format!(
                "backend added, probing {} every {} ({}first scheduled probe in {:?})",
                describe(&backend.spec.probe),
                self.config.probe.interval,
                if at_start {
                    "healthy as soon as a check at start passes; "
                } else {
                    ""
                },
                phase
            ),
        );
        let pool = self.clone();
        tokio::spawn(super::probe::probe_loop(
            backend.spec.probe.clone(),
            self.config.net.clone(),
            self.config.probe,
            phase,
            at_start.then(|| super::probe::DataPath {
                dialer: backend.spec.dialer.clone(),
                client: self.frontend,
            }),
            backend.probe_cancel.clone(),
            token,
            move |result, which| pool.record_probe(&backend, result, which),
        ));
        self.pool_changed();
        Ok(())
    }

    pub fn remove(self: &Arc<Self>, name: &str) -> Result<(), AdminError> {
        let backend = {
            let mut list = self.backends.write().unwrap();
            let i = list
                .iter()
                .position(|b| b.spec.name == name)
                .ok_or_else(|| AdminError::NotFound(name.to_owned()))?;
            list.remove(i)
        };
        backend.removed.store(true, Ordering::Release);
        backend.healthy.store(false, Ordering::Release);
        backend.probe_cancel.cancel();
        self.reroute();
        let active = backend.active.load(Ordering::Acquire);
        let timeout = self.config.drain_timeout;
        self.emit(
            "Removed",
            name,
            format!("removed from the pool: no new connections; {active} established connections are cut after {timeout:?}"),
        );
        self.cut_after(backend, timeout);
        self.pool_changed();
        Ok(())
    }

    pub fn drain(
        self: &Arc<Self>,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<(), AdminError> {
        let backend = self.find(name)?;
        let timeout = timeout.unwrap_or(self.config.drain_timeout);
        if backend.draining.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.reroute();
        let active = backend.active.load(Ordering::Acquire);
        self.emit(
            "Draining",
            name,
            format!("connection draining: no new connections; {active} established connections get up to {timeout:?}"),
        );
        if active == 0 {
            self.emit("Drained", name, "no established connections".to_string());
        }
        self.cut_after(backend, timeout);
        self.pool_changed();
        Ok(())
    }

    pub fn restore(self: &Arc<Self>, name: &str) -> Result<(), AdminError> {
        let backend = self.find(name)?;
        // A new generation voids the pending cut of an earlier drain.
        backend.drain_generation.fetch_add(1, Ordering::AcqRel);
        {
            let mut cut = backend.cut.lock().unwrap();
            if cut.is_cancelled() {
                *cut = self.cancel.child_token();
            }
        }
        let was = backend.draining.swap(false, Ordering::AcqRel);
        self.reroute();
        let health = backend.probe.lock().unwrap().health;
        self.emit(
            "Restored",
            name,
            format!(
                "restored to the pool (was draining: {was}); health {health}: {}",
                if health == Health::Healthy {
                    "receives new connections"
                } else {
                    "receives new connections once its probe passes"
                }
            ),
        );
        self.pool_changed();
        Ok(())
    }

    /// Cut `backend`'s established connections after `timeout`, unless it
    /// is restored first.
    fn cut_after(self: &Arc<Self>, backend: Arc<Backend>, timeout: Duration) {
        let generation = backend.drain_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let Some(token) = self.task_token() else {
            return;
        };
        let pool = self.clone();
        tokio::spawn(async move {
            let _token = token;
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = pool.cancel.cancelled() => return,
            }
            if backend.drain_generation.load(Ordering::Acquire) != generation {
                return;
            }
            let active = backend.active.load(Ordering::Acquire);
            backend.cut.lock().unwrap().cancel();
            if active > 0 {
                pool.emit(
                    "ConnectionsCut",
                    &backend.spec.name,
                    format!("draining timeout {timeout:?} expired: {active} connections reset"),
                );
            }
            pool.bump();
        });
    }
}

pub(crate) fn describe(target: &ProbeTarget) -> String {
    match target {
        ProbeTarget::Http { addr, path } => format!("http://{addr}{path}"),
        ProbeTarget::Tcp { addr } => format!("tcp://{addr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Selection;
    use zdt_core::clock::Clock;

    fn pool(selection: Selection, seed: u64) -> Arc<PoolState> {
        let config = LbConfig {
            selection,
            seed,
            ..Default::default()
        };
        let (tx, _rx) = mpsc::channel(1);
        PoolState::new(
            config,
            "127.0.0.1:80".parse().unwrap(),
            EventSink::discard(Clock::start()),
            CancellationToken::new(),
            tx,
        )
    }

    #[test]
    fn hash_selection_keeps_a_client_port_on_its_backend_and_spreads_ports() {
        let s = pool(Selection::Hash, 1);
        let client: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let first = s.choose(client, 3);
        assert!((0..50).all(|_| s.choose(client, 3) == first));
        let mut counts = [0usize; 3];
        for port in 40000..43000u16 {
            counts[s.choose(SocketAddr::from(([10, 0, 0, 9], port)), 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn random_selection_is_seeded_and_uniform() {
        let client: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let a: Vec<usize> = {
            let s = pool(Selection::Random, 42);
            (0..100).map(|_| s.choose(client, 3)).collect()
        };
        let b: Vec<usize> = {
            let s = pool(Selection::Random, 42);
            (0..100).map(|_| s.choose(client, 3)).collect()
        };
        assert_eq!(a, b, "same seed, same sequence");
        let s = pool(Selection::Random, 7);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[s.choose(client, 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 850), "{counts:?}");
    }
}
