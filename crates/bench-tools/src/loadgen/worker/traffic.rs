//! The traffic scenarios of one worker (fanout, cluster-fanout, ask, cluster-ask, idle),
//! phase by phase: connect the clients (then the responders, cluster-ask, and the senders,
//! fanout in worker 0), report ready, send from the shared start until the end of the run,
//! drain, close every connection and sum up what the receivers counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    PerMessage, ReadyInfo, SendPlan, Sent, Shared, Window, WorkerOut, close_all, connect_all, open,
    receive, respond, room_names, send_asks, send_open_loop, send_saturating, sleep_until_ns,
};
use crate::loadgen::proto::Proto;
use crate::loadgen::stamp::now_ns;
use crate::loadgen::stats::{self, Recorder};
use crate::loadgen::ws::{Endpoint, StdWriter, WsClient};
use crate::loadgen::{Scenario, Spec};

/// Fanout, cluster-fanout, ask, cluster-ask and idle.
pub(super) async fn traffic<F, Fut>(
    spec: &Spec,
    endpoints: &[Endpoint],
    index: usize,
    workers: usize,
    connected: &AtomicU64,
    ready: F,
) -> anyhow::Result<WorkerOut>
where
    F: FnOnce(ReadyInfo) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mode = Mode::of(spec, workers)?;
    let (Some(first), Some(last)) = (endpoints.first(), endpoints.last()) else {
        anyhow::bail!("no --url");
    };
    let mut run = Traffic::new(spec, mode, index, workers, connected);
    // Cluster-ask: askers on the first instance only (the responders use the last).
    let client_endpoints = if mode.cross {
        std::slice::from_ref(first)
    } else {
        endpoints
    };
    run.connect_clients(client_endpoints).await?;
    if mode.cross {
        run.connect_responders(last).await?;
    }
    if mode.fanout && index == 0 {
        run.open_senders(&endpoints[0]).await?;
    }
    let t0 = ready(ReadyInfo {
        connected: run.out.connected,
        connect_failed: run.out.connect_failed,
    })
    .await?;
    run.measure(t0).await
}

/// What a traffic scenario does.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Fanout or cluster-fanout.
    fanout: bool,
    /// Fanout without a rate: every sender keeps a window of messages in flight.
    saturate: bool,
    /// Ask or cluster-ask.
    ask: bool,
    /// Cluster-ask: Asks relayed to responders on the last instance.
    cross: bool,
}

impl Mode {
    /// The mode of `spec.scenario`, or why it cannot run with these options.
    fn of(spec: &Spec, workers: usize) -> anyhow::Result<Mode> {
        let fanout = matches!(spec.scenario, Scenario::Fanout | Scenario::ClusterFanout);
        let saturate = fanout && spec.rate <= 0.0;
        if saturate && workers > 1 {
            anyhow::bail!("saturating fan-out (rate 0) runs in one worker process");
        }
        if spec.rooms > 0 && !spec.proto.has_rooms() {
            anyhow::bail!("rooms need a protocol with rooms (neffos, socketio)");
        }
        let ask = matches!(spec.scenario, Scenario::Ask | Scenario::ClusterAsk);
        let cross = spec.scenario == Scenario::ClusterAsk;
        if ask && !spec.proto.has_rooms() {
            anyhow::bail!("ask needs a protocol with Asks (neffos, socketio)");
        }
        if cross && spec.proto != Proto::Neffos {
            anyhow::bail!("cluster-ask needs the neffos protocol (event `ask-peer`)");
        }
        Ok(Mode {
            fanout,
            saturate,
            ask,
            cross,
        })
    }
}

/// One worker's traffic run: its connections (each read by its own task until `stop`),
/// the writers the sender threads will use, and what it measured so far.
#[derive(Debug)]
struct Traffic<'a> {
    spec: &'a Spec,
    mode: Mode,
    index: usize,
    workers: usize,
    /// Connections opened so far, over every worker (progress display).
    connected: &'a AtomicU64,
    /// The rooms the clients join (empty: the namespace).
    rooms: Vec<String>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    /// The reading tasks; each hands its connection back after `stop`.
    tasks: Vec<tokio::task::JoinHandle<Option<WsClient>>>,
    /// Writers of the asking connections (ask, cluster-ask).
    askers: Vec<StdWriter>,
    /// Connection IDs of the responders (cluster-ask).
    responder_ids: Vec<String>,
    /// Writers of the sending connections (fanout, worker 0).
    senders: Vec<StdWriter>,
    out: WorkerOut,
}

impl<'a> Traffic<'a> {
    /// A run without connections yet: the rooms of the scenario and the state its reading
    /// tasks will share.
    fn new(
        spec: &'a Spec,
        mode: Mode,
        index: usize,
        workers: usize,
        connected: &'a AtomicU64,
    ) -> Self {
        let rooms = if mode.fanout || spec.scenario == Scenario::Idle {
            room_names(spec)
        } else {
            Vec::new()
        };
        let window = mode
            .saturate
            .then(|| Window::new(spec.senders, spec.window.max(1)));
        let shared = Arc::new(Shared {
            record_from_ns: AtomicU64::new(u64::MAX),
            window,
            per_message: (mode.fanout && spec.per_message).then(PerMessage::default),
            check_errors: mode.ask,
            server_ask: mode.cross.then(Recorder::default),
            ..Shared::default()
        });
        let (stop, stopped) = watch::channel(false);
        Traffic {
            spec,
            mode,
            index,
            workers,
            connected,
            rooms,
            shared,
            stop,
            stopped,
            tasks: Vec::new(),
            askers: Vec::new(),
            responder_ids: Vec::new(),
            senders: Vec::new(),
            out: WorkerOut::default(),
        }
    }

    /// Connects this worker's share of `--clients` (receivers, askers or idle connections)
    /// to `endpoints`, client `i` in room `i mod rooms`, reads each from the moment it is
    /// open and counts them per room.
    async fn connect_clients(&mut self, endpoints: &[Endpoint]) -> anyhow::Result<()> {
        let spec = self.spec;
        let ids: Vec<usize> = (self.index..spec.clients)
            .step_by(self.workers.max(1))
            .collect();
        let mut per_room = vec![0; self.rooms.len().max(1)];
        connect_all(
            spec,
            endpoints,
            ids,
            &self.rooms,
            self.connected,
            &mut self.out,
            |i, ws, _id| {
                if self.mode.ask {
                    self.askers.push(ws.std_writer()?);
                }
                let room = if self.rooms.is_empty() {
                    0
                } else {
                    i % self.rooms.len()
                };
                per_room[room] += 1;
                self.tasks.push(tokio::spawn(receive(
                    ws,
                    i,
                    spec.proto,
                    self.shared.clone(),
                    spec.scenario != Scenario::Idle,
                    self.stopped.clone(),
                )));
                Ok(())
            },
        )
        .await?;
        self.out.receivers_per_room = per_room;
        Ok(())
    }

    /// Cluster-ask: connects this worker's share of the responders to `endpoint` (the last
    /// instance), each answering the server's Asks; the askers of this worker ask them
    /// round-robin.
    async fn connect_responders(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let (spec, index) = (self.spec, self.index);
        let wanted = if spec.responders == 0 {
            spec.clients
        } else {
            spec.responders
        };
        // Numbered after the askers (source addresses and masking seeds differ).
        let ids: Vec<usize> = (index..wanted)
            .step_by(self.workers.max(1))
            .map(|i| spec.clients + i)
            .collect();
        let mut scratch = WorkerOut::default();
        connect_all(
            spec,
            std::slice::from_ref(endpoint),
            ids,
            &[],
            self.connected,
            &mut scratch,
            |i, ws, id| {
                let id = id.ok_or_else(|| anyhow::anyhow!("responder {i}: no connection ID"))?;
                self.responder_ids.push(id);
                self.tasks.push(tokio::spawn(respond(
                    ws,
                    spec.proto,
                    self.shared.clone(),
                    self.stopped.clone(),
                )));
                Ok(())
            },
        )
        .await?;
        self.out.responders_connected = scratch.connected;
        self.out.connect_failed += scratch.connect_failed;
        self.out.connect_s = self.out.connect_s.max(scratch.connect_s);
        for e in scratch.errors {
            self.out.error(e);
        }
        if self.responder_ids.is_empty() && !self.askers.is_empty() {
            anyhow::bail!("cluster-ask: worker {index} has askers but no responder connected");
        }
        Ok(())
    }

    /// Fanout, worker 0: opens the `--senders` extra sending connections to `endpoint`, one
    /// after the other, keeps their writers for the sender threads and reads them (without
    /// counting what they receive).
    async fn open_senders(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let spec = self.spec;
        let mut conns = Vec::new();
        for s in 0..spec.senders {
            // Neffos needs the sender in the rooms it emits to; Socket.IO does not.
            let joined: &[String] = if spec.proto == Proto::Neffos {
                &self.rooms
            } else {
                &[]
            };
            match open(spec, endpoint, spec.clients + s, joined).await {
                Ok((ws, _)) => conns.push(ws),
                Err(e) => anyhow::bail!("sender {s}: {e:#}"),
            }
        }
        for ws in conns {
            self.senders.push(ws.std_writer()?);
            self.tasks.push(tokio::spawn(receive(
                ws,
                usize::MAX,
                spec.proto,
                self.shared.clone(),
                false,
                self.stopped.clone(),
            )));
        }
        Ok(())
    }

    /// The measured part, from the shared start `t0`: sends (or only waits) until the end
    /// of `--duration`, drains, closes every connection and returns what this worker
    /// measured.
    async fn measure(mut self, t0: u64) -> anyhow::Result<WorkerOut> {
        let spec = self.spec;
        let cpu_start = stats::cpu_seconds(None);
        self.shared
            .record_from_ns
            .store(t0 + (spec.warmup.max(0.0) * 1e9) as u64, Ordering::Relaxed);
        let t_end = t0 + (spec.duration.max(0.0) * 1e9) as u64;

        // The senders run on their own threads: their schedule needs sub-millisecond sleeps
        // (tokio's timer has a one-millisecond resolution).
        let abort = Arc::new(AtomicBool::new(false));
        let threads = self.start_senders(t0, t_end, &abort);
        if threads.is_empty() {
            sleep_until_ns(t_end).await;
        } else {
            self.join_senders(threads, &abort).await?;
        }
        // Drain, in every worker that receives messages (not only the senders' one): until
        // nothing arrived for a while, or the deadline.
        if self.mode.fanout || self.mode.ask {
            drain(spec, &self.shared, t_end).await;
        }
        if let (Some(start), Some(end)) = (cpu_start, stats::cpu_seconds(None)) {
            self.out.cpu_s = end - start;
        }

        self.close().await;
        Ok(self.into_out())
    }

    /// Starts the sender threads, sending from `t0` until `t_end`: one per sending
    /// connection (fanout), or one over every asking connection (ask); none otherwise.
    fn start_senders(
        &mut self,
        t0: u64,
        t_end: u64,
        abort: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<Sent>> {
        if self.mode.fanout {
            self.spawn_fanout_senders(t0, t_end, abort)
        } else if self.mode.ask && !self.askers.is_empty() {
            vec![self.spawn_asker(t0, t_end, abort)]
        } else {
            Vec::new()
        }
    }

    /// Fanout: one thread per sending connection, on the open-loop schedule (`--rate`) or
    /// saturating (rate 0, each sender waiting for its window).
    fn spawn_fanout_senders(
        &mut self,
        t0: u64,
        t_end: u64,
        abort: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<Sent>> {
        let spec = self.spec;
        let targets: Arc<Vec<u64>> = Arc::new(self.out.receivers_per_room.clone());
        let mut threads = Vec::new();
        for (s, writer) in std::mem::take(&mut self.senders).into_iter().enumerate() {
            let plan = SendPlan {
                proto: spec.proto,
                rooms: self.rooms.clone(),
                responders: Vec::new(),
                size: spec.size,
                sender: s,
                senders: spec.senders.max(1),
                rate: spec.rate,
                t0,
                t_end,
            };
            let (shared, targets, abort) = (self.shared.clone(), targets.clone(), abort.clone());
            threads.push(std::thread::spawn(move || {
                if plan.rate > 0.0 {
                    send_open_loop(&plan, writer, &abort)
                } else {
                    send_saturating(&plan, writer, &shared, &targets, &abort)
                }
            }));
        }
        threads
    }

    /// Ask: one thread sending this worker's share of the open-loop Asks round-robin over
    /// its asking connections (to the responders, cluster-ask).
    fn spawn_asker(&mut self, t0: u64, t_end: u64, abort: &Arc<AtomicBool>) -> JoinHandle<Sent> {
        let spec = self.spec;
        let plan = SendPlan {
            proto: spec.proto,
            rooms: Vec::new(),
            responders: std::mem::take(&mut self.responder_ids),
            size: spec.size,
            sender: self.index,
            senders: self.workers.max(1),
            rate: spec.rate,
            t0,
            t_end,
        };
        let writers = std::mem::take(&mut self.askers);
        let abort = abort.clone();
        std::thread::spawn(move || send_asks(&plan, writers, &abort))
    }

    /// Waits for the sender threads (at most `--duration` plus 30 seconds: then they are
    /// told to abort and the run fails) and adds what they sent to `out`.
    async fn join_senders(
        &mut self,
        threads: Vec<JoinHandle<Sent>>,
        abort: &AtomicBool,
    ) -> anyhow::Result<()> {
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
        });
        let results = match tokio::time::timeout(
            Duration::from_secs_f64(self.spec.duration.max(0.0) + 30.0),
            joined,
        )
        .await
        {
            Ok(Ok(results)) => results,
            _ => {
                abort.store(true, Ordering::Relaxed);
                anyhow::bail!("the senders did not finish in time");
            }
        };
        for result in results {
            add_sent(&mut self.out, result, self.mode.fanout);
        }
        Ok(())
    }

    /// Stops every reading task and closes the connections they hand back.
    async fn close(&mut self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let mut open_conns = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(Some(ws)) = task.await {
                open_conns.push(ws);
            }
        }
        close_all(open_conns).await;
    }

    /// What this worker measured: what was sent, and what the reading tasks counted and
    /// recorded.
    fn into_out(self) -> WorkerOut {
        let (shared, mut out) = (self.shared, self.out);
        out.received = shared.received.load(Ordering::Relaxed);
        out.disconnects = shared.disconnects.load(Ordering::Relaxed);
        out.out_of_order = shared.out_of_order.load(Ordering::Relaxed);
        out.answered = shared.answered.load(Ordering::Relaxed);
        out.error_replies = shared.error_replies.load(Ordering::Relaxed);
        if let Some(e) = shared.first_error.lock().take() {
            out.error(e);
        }
        out.last_recv_ns = shared.last_recv_ns.load(Ordering::Relaxed);
        out.hist = stats::to_pairs(&shared.recorder.merged());
        if let Some(server_ask) = &shared.server_ask {
            out.server_ask_hist = stats::to_pairs(&server_ask.merged());
        }
        if let Some(per_message) = &shared.per_message {
            out.per_message = per_message.take();
        }
        out
    }
}

/// Adds what one sender thread sent (or that it panicked) to `out`; fanout also keeps the
/// count per sender.
fn add_sent(out: &mut WorkerOut, result: std::thread::Result<Sent>, fanout: bool) {
    if fanout {
        let n = result.as_ref().map_or(0, |s| s.per_room.iter().sum());
        out.sent_per_sender.push(n);
    }
    match result {
        Ok(sent) => {
            if out.sent_per_room.len() < sent.per_room.len() {
                out.sent_per_room.resize(sent.per_room.len(), 0);
            }
            for (acc, n) in out.sent_per_room.iter_mut().zip(&sent.per_room) {
                *acc += n;
            }
            out.stalls += sent.stalls;
            if let Some(e) = sent.error {
                out.error(e);
            }
        }
        Err(_) => out.error("a sender thread panicked"),
    }
}

/// Waits after `t_end` until nothing arrived for `--drain-quiet` seconds, or at most
/// `--drain-max` seconds.
async fn drain(spec: &Spec, shared: &Shared, t_end: u64) {
    let drain_deadline = t_end + (spec.drain_max.max(0.0) * 1e9) as u64;
    let quiet = (spec.drain_quiet.max(0.0) * 1e9) as u64;
    loop {
        let now = now_ns();
        let last = shared.last_recv_ns.load(Ordering::Relaxed);
        if now >= drain_deadline || (now > t_end && now.saturating_sub(last.max(t_end)) > quiet) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
