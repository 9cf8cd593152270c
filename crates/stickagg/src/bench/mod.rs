//! `stickagg-bench`: the load simulator (see `cli.rs` for what it does).
//!
//! Layout: `cli` (arguments, `--store`), `dist` (key choice), `node` (one
//! simulated node: session, updates, checks), `spawn` (stickagg and HAProxy
//! processes), `procfs` (CPU time, RSS, load), `report` (table and JSON).
//! This file runs the phases: connect, fill, load, drain, check.

pub mod cli;
pub mod dist;
pub mod node;
pub mod procfs;
pub mod report;
pub mod spawn;

use cli::{Args, Store};
use dist::Sampler;
use node::{NodeResult, Phase, RunCfg, Shared};
use report::{Check, Convergence, Fill, PhaseReport, Restart, Sample};
use spawn::Spawned;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs the simulator; the exit status is 0 when every check passed, 1 on a
/// mismatch, 2 when the run could not be completed.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("stickagg-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    Stickagg,
    Haproxy,
}

impl Receiver {
    fn label(self) -> &'static str {
        match self {
            Receiver::Stickagg => "stickagg",
            Receiver::Haproxy => "haproxy",
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    if args.nodes == 0 || args.keys == 0 {
        return Err("--nodes and --keys must be at least 1".into());
    }
    // Each simulated node's connection is a descriptor of this process (a
    // stickagg it spawns raises its own limit).
    if let Ok(stickagg::fdlimit::Fit::Short { soft, .. }) = stickagg::fdlimit::fit(args.nodes) {
        eprintln!(
            "stickagg-bench: warning: the open-file limit is {soft}: not all {} nodes may connect (raise ulimit -Hn)",
            args.nodes
        );
    }
    if args.updates.is_none()
        && args.duration.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err("--duration must be positive".into());
    }
    if args.table.contains('/') || args.table.is_empty() {
        return Err("--table is a plain table name (sent as /<name>)".into());
    }
    // The nodes' expected totals count every update they ever sent, so no
    // contribution may lapse before the check ends (a node that goes quiet
    // on a key for longer than `expire` loses it at the aggregator, exactly
    // as HAProxy would drop its own entry).
    let checked = args.spawn || args.target.is_some();
    let run_ms = (args.duration + args.settle.max(1.0)) * 1000.0;
    if checked && args.updates.is_none() && args.expire as f64 <= run_ms {
        return Err(format!(
            "--expire {} ms does not outlast the load and the settle time ({run_ms:.0} ms): \
             contributions would lapse before the exact-total check; give a longer --expire",
            args.expire
        ));
    }
    if args.sample < 0.0 {
        return Err("--sample must not be negative".into());
    }
    let store = Store::parse(&args.store)?;
    let sampler = Arc::new(Sampler::new(args.dist, args.keys));
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("runtime: {e}"))?;

    let mut reports = Vec::new();
    if args.spawn || args.target.is_some() {
        let mut spawned = if args.spawn {
            Some(spawn::stickagg(&args)?)
        } else {
            None
        };
        let (target, pid) = match &spawned {
            Some(s) => (s.addr, Some(s.pid())),
            None => (args.target.expect("checked"), args.pid),
        };
        let r = rt.block_on(phase(
            &args,
            &store,
            &sampler,
            Receiver::Stickagg,
            target,
            pid,
            spawned.as_mut(),
        ));
        if let (Err(_), Some(s)) = (&r, &spawned) {
            eprintln!(
                "--- {} log: {} ---\n{}",
                s.what,
                s.log.display(),
                s.log_tail(20)
            );
        }
        drop(spawned);
        reports.push(r?);
    }
    if let Some(bin) = &args.haproxy {
        let mut h = spawn::haproxy(&args, bin, &store)?;
        let (addr, pid) = (h.addr, h.pid());
        let r = rt.block_on(phase(
            &args,
            &store,
            &sampler,
            Receiver::Haproxy,
            addr,
            Some(pid),
            Some(&mut h),
        ));
        let mut r = r.inspect_err(|_| {
            eprintln!(
                "--- haproxy log: {} ---\n{}",
                h.log.display(),
                h.log_tail(20)
            );
        })?;
        r.table_used = spawn::haproxy_table_used(&h, &args.table);
        reports.push(r);
    }
    if reports.is_empty() {
        return Err("nothing to do: give --spawn, --target ADDR or --haproxy PATH".into());
    }
    let ok = reports
        .iter()
        .all(|r| r.check.as_ref().is_none_or(|c| c.ok));
    if args.json {
        println!("{}", report::json(&reports, ok));
    } else {
        print!("{}", report::table(&reports));
    }
    Ok(ok)
}

/// The progress line on stderr: rewritten in place on a terminal, one line
/// every 2 s otherwise.
struct Progress {
    on: bool,
    tty: bool,
    last: Instant,
    last_acked: u64,
    last_cpu: Option<f64>,
    pid: Option<u32>,
    label: &'static str,
}

impl Progress {
    fn new(quiet: bool, label: &'static str, pid: Option<u32>) -> Progress {
        Progress {
            on: !quiet,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            last_acked: 0,
            last_cpu: pid.and_then(procfs::cpu_seconds),
            pid,
            label,
        }
    }

    fn tick(&mut self, sh: &Shared, what: &str) {
        let every = if self.tty { 0.25 } else { 2.0 };
        let dt = self.last.elapsed().as_secs_f64();
        if !self.on || dt < every {
            return;
        }
        let sum = |f: fn(&node::NodeStat) -> u64| sh.stats.iter().map(f).sum::<u64>();
        let sent = sum(|s| s.sent.load(Relaxed));
        let acked = sum(|s| s.acked.load(Relaxed));
        let agg = sum(|s| s.agg_in.load(Relaxed));
        let cpu = self.pid.and_then(procfs::cpu_seconds);
        let pct = match (cpu, self.last_cpu) {
            (Some(a), Some(b)) => format!("{:.0}%", (a - b) / dt * 100.0),
            _ => "-".into(),
        };
        let line = format!(
            "[{}] {what:<12} sent {:>8}  acked {:>8} ({:>7}/s)  .agg in {:>8}  cpu {pct:>5}  load {:.2}",
            self.label,
            fmt_n(sent),
            fmt_n(acked),
            fmt_n(((acked.saturating_sub(self.last_acked)) as f64 / dt) as u64),
            fmt_n(agg),
            procfs::loadavg()
        );
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
        self.last = Instant::now();
        self.last_acked = acked;
        self.last_cpu = cpu;
    }

    fn done(&mut self) {
        if self.on && self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn fmt_n(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 100_000 => format!("{:.0}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

struct Run<'a> {
    sh: Arc<Shared>,
    handles: Vec<JoinHandle<Result<NodeResult, String>>>,
    proc_: Option<&'a mut Spawned>,
    progress: Progress,
    /// The receiver's pid (a restart changes it).
    pid: Option<u32>,
    /// `--sample`: every how long, since when, next due, and the samples.
    sample_every: Option<Duration>,
    sampling_since: Option<Instant>,
    next_sample: Instant,
    samples: Vec<Sample>,
}

impl Run<'_> {
    /// Waits until `cond` holds, failing early when a node or the receiver
    /// process failed.
    async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Shared) -> bool,
    ) -> Result<bool, String> {
        let start = Instant::now();
        loop {
            if cond(&self.sh) {
                return Ok(true);
            }
            for h in &mut self.handles {
                if h.is_finished() {
                    return Err(match h.await {
                        Ok(Ok(_)) => "a node stopped early".into(),
                        Ok(Err(e)) => e,
                        Err(e) => format!("a node panicked: {e}"),
                    });
                }
            }
            if let Some(p) = self.proc_.as_deref_mut() {
                p.check_alive()?;
            }
            if start.elapsed() > timeout {
                return Ok(false);
            }
            self.sample(false);
            self.progress.tick(&self.sh, what);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn sum(&self, f: fn(&node::NodeStat) -> u64) -> u64 {
        self.sh.stats.iter().map(f).sum()
    }

    /// Takes a `--sample` if one is due (or `now`, for the last one).
    fn sample(&mut self, now: bool) {
        let (Some(every), Some(since)) = (self.sample_every, self.sampling_since) else {
            return;
        };
        if !now && Instant::now() < self.next_sample {
            return;
        }
        // The closing sample only when the last one is not just as recent.
        let t = since.elapsed().as_secs_f64();
        if now
            && self
                .samples
                .last()
                .is_some_and(|x| t - x.t < every.as_secs_f64() / 2.0)
        {
            return;
        }
        self.next_sample += every;
        self.samples.push(Sample {
            t,
            rss_kib: self.pid.and_then(|p| procfs::vm_kib(p, "VmRSS")),
            fds: self.pid.and_then(procfs::open_fds),
            cpu_s: self.pid.and_then(procfs::cpu_seconds),
            acked: self.sum(|s| s.acked.load(Relaxed)),
            agg_in: self.sum(|s| s.agg_in.load(Relaxed)),
        });
    }

    /// `--restart`: with every node holding exact totals after the fill,
    /// `kill -9` the receiver, start it again, and time the relearning.
    async fn restart(
        &mut self,
        tx: &watch::Sender<Phase>,
        args: &Args,
        settle: Duration,
    ) -> Result<Restart, String> {
        // The fill sent every key once from every node.
        let expected = Arc::new(vec![
            args.nodes.min(u32::MAX as usize) as u32;
            args.keys as usize
        ]);
        let _ = tx.send(Phase::Check(expected.clone()));
        if !self
            .wait("fill totals", settle, |sh| {
                sh.stats.iter().all(|s| s.mismatches.load(Relaxed) == 0)
            })
            .await?
        {
            return Err("the totals after the fill are not exact".into());
        }
        let _ = tx.send(Phase::Restart(expected));
        // Every node must know a lost connection is expected now.
        self.wait("restart", settle, |sh| {
            sh.stats.iter().all(|s| !s.ready.load(Relaxed))
        })
        .await?;
        let Some(p) = self.proc_.as_deref_mut() else {
            return Err("--restart needs --spawn".into());
        };
        let t0 = Instant::now();
        p.restart()?;
        let pid = p.pid();
        self.pid = Some(pid);
        self.progress.pid = Some(pid);
        let relearned = self
            .wait("relearning", settle, |sh| {
                sh.stats
                    .iter()
                    .all(|s| s.ready.load(Relaxed) && s.mismatches.load(Relaxed) == 0)
            })
            .await?;
        let secs = t0.elapsed().as_secs_f64();
        if !relearned {
            return Err(format!(
                "totals not exact {settle:?} after the restart ({} node×keys differ)",
                self.sh
                    .stats
                    .iter()
                    .map(|s| s.mismatches.load(Relaxed))
                    .filter(|&m| m != u64::MAX)
                    .sum::<u64>()
            ));
        }
        Ok(Restart {
            entries: args.nodes as u64 * args.keys as u64,
            secs,
            cpu_s: procfs::cpu_seconds(pid),
            pid_after: pid,
        })
    }
}

fn all_acked(sh: &Shared) -> bool {
    sh.stats
        .iter()
        .all(|s| s.acked.load(Relaxed) == s.sent.load(Relaxed))
}

/// One run against one receiver.
async fn phase(
    args: &Args,
    store: &Store,
    sampler: &Arc<Sampler>,
    receiver: Receiver,
    target: SocketAddr,
    pid: Option<u32>,
    proc_: Option<&mut Spawned>,
) -> Result<PhaseReport, String> {
    let checked = receiver == Receiver::Stickagg;
    let callee = match receiver {
        Receiver::Stickagg => args.agg_name.clone(),
        Receiver::Haproxy => spawn::HAPROXY_PEER.to_string(),
    };
    let cfg = RunCfg {
        target,
        callee,
        nodes: args.nodes,
        keys: args.keys,
        rate: args.rate,
        updates: args.updates,
        table: format!("/{}", args.table),
        agg_table: checked.then(|| format!("/{}{}", args.table, args.suffix)),
        store: store.clone(),
        expire: args.expire,
        window: args.window,
        marker_us: args.marker_ms.unwrap_or((args.nodes as u64 / 10).max(1)) * 1000,
        seed: args.seed,
        sampler: sampler.clone(),
    };
    let settle = Duration::from_secs_f64(args.settle.max(1.0));
    let sh = Arc::new(Shared::new(cfg));
    let (tx, rx) = watch::channel(Phase::Connect);
    let handles = (0..args.nodes)
        .map(|i| tokio::spawn(node::run(sh.clone(), i, rx.clone())))
        .collect();
    let mut run = Run {
        sh: sh.clone(),
        handles,
        proc_,
        progress: Progress::new(args.quiet, receiver.label(), pid),
        pid,
        sample_every: (args.sample > 0.0).then(|| Duration::from_secs_f64(args.sample)),
        sampling_since: None,
        next_sample: Instant::now(),
        samples: Vec::new(),
    };
    let load_start = procfs::loadavg();
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds);
    let rss = |pid: Option<u32>| pid.and_then(|p| procfs::vm_kib(p, "VmRSS"));

    if !run
        .wait("handshakes", settle, |sh| {
            sh.stats.iter().all(|s| s.ready.load(Relaxed))
        })
        .await?
    {
        let n = sh.stats.iter().filter(|s| s.ready.load(Relaxed)).count();
        return Err(format!(
            "only {n} of {} nodes completed the handshake and resync in {settle:?}",
            args.nodes
        ));
    }
    let rss_base_kib = rss(run.pid);
    // No contribution lapses before this plus `expire`.
    let first_update = Instant::now();

    let fill = if args.fill || args.restart {
        let (t0, c0) = (Instant::now(), cpu(run.pid));
        let _ = tx.send(Phase::Fill);
        let done = run
            .wait("fill", settle.max(Duration::from_secs(600)), |sh| {
                sh.stats.iter().all(|s| s.gen_done.load(Relaxed)) && all_acked(sh)
            })
            .await?;
        if !done {
            return Err("the fill did not complete".into());
        }
        Some(Fill {
            updates: args.nodes as u64 * args.keys as u64,
            secs: t0.elapsed().as_secs_f64(),
            cpu_s: cpu(run.pid).zip(c0).map(|(a, b)| a - b),
            rss_kib: rss(run.pid),
        })
    } else {
        None
    };
    let restart = if args.restart && checked {
        Some(run.restart(&tx, args, settle).await?)
    } else {
        None
    };

    // The load.
    let (cpu0, sim0) = (cpu(run.pid), procfs::self_cpu_seconds());
    let start_us = sh.now_us();
    run.sampling_since = Some(Instant::now());
    run.next_sample = Instant::now();
    // Cleared here, not by the nodes: the wait below must not see the
    // fill's flags before the nodes enter the load.
    for s in &sh.stats {
        s.gen_done.store(false, Relaxed);
    }
    let _ = tx.send(Phase::Load { start_us });
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    match args.updates {
        Some(_) => {
            let limit = settle.max(Duration::from_secs(3600));
            if !run
                .wait("load", limit, |sh| {
                    sh.stats.iter().all(|s| s.gen_done.load(Relaxed))
                })
                .await?
            {
                return Err("the load did not complete".into());
            }
        }
        None => {
            run.wait("load", Duration::from_secs_f64(args.duration), |_| {
                Instant::now() >= end
            })
            .await?;
        }
    }
    let _ = tx.send(Phase::Drain);
    let load_end_at = Instant::now();
    // Every node publishes its final counters on entering Drain: after
    // that, it sends nothing more.
    if !run
        .wait("drain", settle, |sh| {
            sh.stats
                .iter()
                .all(|s| s.counters.lock().unwrap().is_some())
        })
        .await?
    {
        return Err("the nodes did not stop sending".into());
    }
    let acked = run.wait("last ACKs", settle, all_acked).await?;
    if !acked {
        return Err(format!(
            "{} of {} updates acknowledged {settle:?} after the load",
            run.sum(|s| s.acked.load(Relaxed)),
            run.sum(|s| s.sent.load(Relaxed))
        ));
    }
    let last_ack_us = sh
        .stats
        .iter()
        .map(|s| s.last_ack_us.load(Relaxed))
        .max()
        .unwrap_or(start_us);
    let cpu_ack = cpu(run.pid);
    let updates = run.sum(|s| s.load_sent.load(Relaxed));

    let mut check = None;
    let mut cpu_total = None;
    if checked {
        let lived = first_update.elapsed() + settle;
        if lived.as_millis() >= args.expire as u128 {
            return Err(format!(
                "the run lasts {lived:?} with the settle time, longer than --expire {} ms: \
                 contributions may lapse before the exact-total check; give a longer --expire",
                args.expire
            ));
        }
        let counters: Vec<Vec<u32>> = sh
            .stats
            .iter()
            .map(|s| s.counters.lock().unwrap().take().unwrap_or_default())
            .collect();
        let expected = Arc::new(node::combine_totals(store, &counters, args.keys as usize));
        drop(counters);
        let _ = tx.send(Phase::Check(expected));
        let ok = run
            .wait("exact totals", settle, |sh| {
                sh.stats.iter().all(|s| s.mismatches.load(Relaxed) == 0)
            })
            .await?;
        cpu_total = cpu(run.pid);
        let mismatches = sh
            .stats
            .iter()
            .map(|s| s.mismatches.load(Relaxed))
            .filter(|&m| m != u64::MAX)
            .sum();
        let example = sh.stats.iter().enumerate().find_map(|(i, s)| {
            let (k, got, want) = (*s.example.lock().unwrap())?;
            let ip = Ipv4Addr::from(node::KEY_BASE.wrapping_add(k));
            Some((i, ip.to_string(), got, want))
        });
        check = Some(Check {
            ok,
            keys: args.keys,
            mismatches,
            example: if ok { None } else { example },
            converged_after_s: load_end_at.elapsed().as_secs_f64(),
        });
    }
    run.sample(true);
    let sim_cpu_s = procfs::self_cpu_seconds() - sim0;
    let hwm_kib = run.pid.and_then(|p| procfs::vm_kib(p, "VmHWM"));
    let rss_end_kib = rss(run.pid);
    let agg_in = run.sum(|s| s.agg_in.load(Relaxed));
    let unresolved = sh.unresolved_markers();
    let _ = tx.send(Phase::Stop);
    let mut delays = Vec::new();
    for h in std::mem::take(&mut run.handles) {
        match h.await {
            Ok(Ok(r)) => delays.extend(r.delays_us),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a node panicked: {e}")),
        }
    }
    run.progress.done();
    let sub = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    Ok(PhaseReport {
        receiver: receiver.label(),
        pid: run.pid,
        restart,
        samples: std::mem::take(&mut run.samples),
        nodes: args.nodes,
        keys: args.keys,
        dist: args.dist.to_string(),
        rate_per_node: args.rate,
        updates_per_node: args.updates,
        load_start,
        load_end: procfs::loadavg(),
        fill,
        updates,
        ingest_s: last_ack_us.saturating_sub(start_us) as f64 / 1e6,
        cpu_ingest_s: sub(cpu_ack, cpu0),
        cpu_total_s: sub(cpu_total, cpu0),
        sim_cpu_s,
        rss_base_kib,
        rss_end_kib,
        hwm_kib,
        agg_in,
        convergence: if checked {
            Convergence::from_us(delays, unresolved)
        } else {
            None
        },
        check,
        table_used: None,
    })
}
