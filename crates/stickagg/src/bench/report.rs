//! Results of a run: a table for people, JSON for scripts.

use std::fmt::Write;

/// Convergence delay distribution (ms).
#[derive(Debug, Clone)]
pub struct Convergence {
    pub markers_seen: usize,
    pub unresolved: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Convergence {
    pub fn from_us(mut d: Vec<u32>, unresolved: usize) -> Option<Convergence> {
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        Some(Convergence {
            markers_seen: d.len(),
            unresolved,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: *d.last().unwrap() as f64 / 1000.0,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Fill {
    pub updates: u64,
    pub secs: f64,
    pub cpu_s: Option<f64>,
    pub rss_kib: Option<u64>,
}

/// `--restart`: the receiver killed and started again after the fill.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Entries to relearn: nodes × keys.
    pub entries: u64,
    /// From the kill to exact totals on every node.
    pub secs: f64,
    /// CPU of the new process over that time.
    pub cpu_s: Option<f64>,
    pub pid_after: u32,
}

/// `--sample`: the receiver, every few seconds of the load.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    pub cpu_s: Option<f64>,
    /// Updates acknowledged and `.agg` updates received so far (all nodes).
    pub acked: u64,
    pub agg_in: u64,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub ok: bool,
    pub keys: u32,
    /// Sum over nodes of keys whose total differs.
    pub mismatches: u64,
    /// (node, key, received, expected)
    pub example: Option<(usize, String, u32, u32)>,
    /// From the end of the load to exact totals everywhere.
    pub converged_after_s: f64,
}

#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub receiver: &'static str,
    pub pid: Option<u32>,
    pub nodes: usize,
    pub keys: u32,
    pub dist: String,
    pub rate_per_node: u64,
    pub updates_per_node: Option<u64>,
    pub load_start: f64,
    pub load_end: f64,
    pub fill: Option<Fill>,
    pub restart: Option<Restart>,
    pub samples: Vec<Sample>,
    pub updates: u64,
    pub ingest_s: f64,
    /// CPU of the receiver from the start of the load to the last ACK.
    pub cpu_ingest_s: Option<f64>,
    /// … to exact totals everywhere (stickagg: includes pushing `.agg`).
    pub cpu_total_s: Option<f64>,
    pub sim_cpu_s: f64,
    pub rss_base_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    pub agg_in: u64,
    pub convergence: Option<Convergence>,
    pub check: Option<Check>,
    /// HAProxy: entries in its input table at the end.
    pub table_used: Option<u64>,
}

impl PhaseReport {
    pub fn per_sec(&self) -> f64 {
        self.updates as f64 / self.ingest_s.max(1e-9)
    }

    pub fn cpu(&self) -> Option<f64> {
        self.cpu_total_s.or(self.cpu_ingest_s)
    }

    pub fn cpu_per_m(&self) -> Option<f64> {
        self.cpu()
            .filter(|_| self.updates > 0)
            .map(|c| c / (self.updates as f64 / 1e6))
    }

    pub fn per_cpu_s(&self) -> Option<f64> {
        self.cpu()
            .filter(|&c| c > 0.0 && self.updates > 0)
            .map(|c| self.updates as f64 / c)
    }

    /// Memory per (node, key) after the fill, over the RSS before it.
    pub fn bytes_per_node_key(&self) -> Option<f64> {
        let f = self.fill.as_ref()?;
        let grown = f.rss_kib?.saturating_sub(self.rss_base_kib?);
        Some(grown as f64 * 1024.0 / (self.nodes as f64 * self.keys as f64))
    }
}

fn si(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("-".into(), f)
}

fn mib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

/// The results as a table, one column per receiver.
pub fn table(reps: &[PhaseReport]) -> String {
    type Row = (&'static str, fn(&PhaseReport) -> String);
    let rows: &[Row] = &[
        ("receiver pid", |r| opt(r.pid, |p| p.to_string())),
        ("nodes × keys", |r| format!("{} × {}", r.nodes, r.keys)),
        ("distribution", |r| r.dist.clone()),
        ("target rate", |r| {
            if r.rate_per_node == 0 {
                "as fast as possible".into()
            } else {
                format!("{}/s per node", si(r.rate_per_node as f64))
            }
        }),
        ("fill: updates/s", |r| {
            opt(r.fill.as_ref(), |f| si(f.updates as f64 / f.secs.max(1e-9)))
        }),
        ("fill: cpu s / M updates", |r| {
            opt(
                r.fill.as_ref().and_then(|f| Some((f.cpu_s?, f.updates))),
                |(c, u)| format!("{:.3}", c / (u as f64 / 1e6)),
            )
        }),
        ("restart: entries relearned", |r| {
            opt(r.restart.as_ref(), |x| si(x.entries as f64))
        }),
        ("restart: kill -9 → exact totals", |r| {
            opt(r.restart.as_ref(), |x| format!("{:.3} s", x.secs))
        }),
        ("restart: cpu s of the new process", |r| {
            opt(r.restart.as_ref().and_then(|x| x.cpu_s), |c| {
                format!("{c:.2}")
            })
        }),
        ("load: updates", |r| si(r.updates as f64)),
        ("load: seconds to last ACK", |r| {
            format!("{:.2}", r.ingest_s)
        }),
        ("ingest updates/s", |r| si(r.per_sec())),
        ("cpu s (to last ACK)", |r| {
            opt(r.cpu_ingest_s, |c| format!("{c:.2}"))
        }),
        ("cpu s (to end of check)", |r| {
            opt(r.cpu_total_s, |c| format!("{c:.2}"))
        }),
        ("cpu s / M updates", |r| {
            opt(r.cpu_per_m(), |c| format!("{c:.3}"))
        }),
        ("updates / cpu s", |r| opt(r.per_cpu_s(), si)),
        ("simulator cpu s", |r| format!("{:.2}", r.sim_cpu_s)),
        (".agg updates received", |r| si(r.agg_in as f64)),
        ("convergence p50", |r| {
            opt(r.convergence.as_ref(), |c| format!("{:.2} ms", c.p50))
        }),
        ("convergence p99", |r| {
            opt(r.convergence.as_ref(), |c| format!("{:.2} ms", c.p99))
        }),
        ("convergence p99.9", |r| {
            opt(r.convergence.as_ref(), |c| format!("{:.2} ms", c.p999))
        }),
        ("convergence max", |r| {
            opt(r.convergence.as_ref(), |c| format!("{:.2} ms", c.max))
        }),
        ("markers seen / unresolved", |r| {
            opt(r.convergence.as_ref(), |c| {
                format!("{} / {}", c.markers_seen, c.unresolved)
            })
        }),
        ("RSS before load", |r| opt(r.rss_base_kib, mib)),
        ("RSS after fill", |r| {
            opt(r.fill.as_ref().and_then(|f| f.rss_kib), mib)
        }),
        ("RSS at end", |r| opt(r.rss_end_kib, mib)),
        ("peak RSS (VmHWM)", |r| opt(r.hwm_kib, mib)),
        ("bytes per (node, key)", |r| {
            opt(r.bytes_per_node_key(), |b| format!("{b:.1}"))
        }),
        ("table entries", |r| opt(r.table_used, |u| u.to_string())),
        ("exact totals", |r| {
            opt(r.check.as_ref(), |c| {
                if c.ok {
                    format!(
                        "OK ({} keys, {:.2} s after load)",
                        c.keys, c.converged_after_s
                    )
                } else {
                    let ex = c
                        .example
                        .as_ref()
                        .map_or(String::new(), |(n, k, got, want)| {
                            format!(", e.g. node{} {k}: {got} ≠ {want}", n + 1)
                        });
                    format!("MISMATCH ({} node×keys{ex})", c.mismatches)
                }
            })
        }),
        ("load average", |r| {
            format!("{:.2} → {:.2}", r.load_start, r.load_end)
        }),
    ];
    let mut cells: Vec<Vec<String>> = Vec::new();
    cells.push(
        std::iter::once(String::new())
            .chain(reps.iter().map(|r| r.receiver.to_string()))
            .collect(),
    );
    for (label, f) in rows {
        let vals: Vec<String> = reps.iter().map(f).collect();
        if vals.iter().all(|v| v == "-") {
            continue;
        }
        cells.push(std::iter::once(label.to_string()).chain(vals).collect());
    }
    let ncol = reps.len() + 1;
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        for (c, v) in row.iter().enumerate() {
            let pad = widths[c] - v.chars().count();
            if c == 0 {
                let _ = write!(out, "{v}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{v}", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    for r in reps.iter().filter(|r| !r.samples.is_empty()) {
        let _ = writeln!(
            out,
            "\n{} samples\n{:>8}  {:>10}  {:>5}  {:>8}  {:>10}  {:>10}",
            r.receiver, "t (s)", "RSS (MiB)", "fds", "cpu s", "acked", ".agg in"
        );
        for x in &r.samples {
            let _ = writeln!(
                out,
                "{:>8.0}  {:>10}  {:>5}  {:>8}  {:>10}  {:>10}",
                x.t,
                opt(x.rss_kib, |k| format!("{:.1}", k as f64 / 1024.0)),
                opt(x.fds, |f| f.to_string()),
                opt(x.cpu_s, |c| format!("{c:.1}")),
                x.acked,
                x.agg_in
            );
        }
    }
    out
}

/// A tiny JSON writer (no dependency for one object).
pub enum J {
    Num(f64),
    Int(u64),
    Str(String),
    Bool(bool),
    Null,
    Obj(Vec<(&'static str, J)>),
    Arr(Vec<J>),
}

impl std::fmt::Display for J {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            J::Num(v) if v.is_finite() => write!(f, "{v}"),
            J::Num(_) | J::Null => write!(f, "null"),
            J::Int(v) => write!(f, "{v}"),
            J::Bool(b) => write!(f, "{b}"),
            J::Str(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            J::Obj(kv) => {
                f.write_char('{')?;
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "\"{k}\":{v}")?;
                }
                f.write_char('}')
            }
            J::Arr(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
        }
    }
}

fn on<T>(v: Option<T>, f: impl Fn(T) -> J) -> J {
    v.map_or(J::Null, f)
}

pub fn json(reps: &[PhaseReport], ok: bool) -> String {
    let phases = reps
        .iter()
        .map(|r| {
            J::Obj(vec![
                ("receiver", J::Str(r.receiver.into())),
                ("pid", on(r.pid, |p| J::Int(p as u64))),
                ("nodes", J::Int(r.nodes as u64)),
                ("keys", J::Int(r.keys as u64)),
                ("dist", J::Str(r.dist.clone())),
                ("rate_per_node", J::Int(r.rate_per_node)),
                ("updates_per_node", on(r.updates_per_node, J::Int)),
                ("loadavg_start", J::Num(r.load_start)),
                ("loadavg_end", J::Num(r.load_end)),
                (
                    "fill",
                    on(r.fill.as_ref(), |f| {
                        J::Obj(vec![
                            ("updates", J::Int(f.updates)),
                            ("seconds", J::Num(f.secs)),
                            (
                                "updates_per_sec",
                                J::Num(f.updates as f64 / f.secs.max(1e-9)),
                            ),
                            ("cpu_s", on(f.cpu_s, J::Num)),
                            ("rss_kib", on(f.rss_kib, J::Int)),
                        ])
                    }),
                ),
                (
                    "restart",
                    on(r.restart.as_ref(), |x| {
                        J::Obj(vec![
                            ("entries", J::Int(x.entries)),
                            ("seconds_to_exact", J::Num(x.secs)),
                            ("cpu_s", on(x.cpu_s, J::Num)),
                            ("pid_after", J::Int(x.pid_after as u64)),
                        ])
                    }),
                ),
                (
                    "samples",
                    J::Arr(
                        r.samples
                            .iter()
                            .map(|x| {
                                J::Obj(vec![
                                    ("t", J::Num(x.t)),
                                    ("rss_kib", on(x.rss_kib, J::Int)),
                                    ("fds", on(x.fds, J::Int)),
                                    ("cpu_s", on(x.cpu_s, J::Num)),
                                    ("acked", J::Int(x.acked)),
                                    ("agg_in", J::Int(x.agg_in)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("updates", J::Int(r.updates)),
                ("ingest_seconds", J::Num(r.ingest_s)),
                ("updates_per_sec", J::Num(r.per_sec())),
                ("cpu_ingest_s", on(r.cpu_ingest_s, J::Num)),
                ("cpu_total_s", on(r.cpu_total_s, J::Num)),
                ("cpu_s_per_m_updates", on(r.cpu_per_m(), J::Num)),
                ("updates_per_cpu_s", on(r.per_cpu_s(), J::Num)),
                ("simulator_cpu_s", J::Num(r.sim_cpu_s)),
                ("rss_base_kib", on(r.rss_base_kib, J::Int)),
                ("rss_end_kib", on(r.rss_end_kib, J::Int)),
                ("vm_hwm_kib", on(r.hwm_kib, J::Int)),
                ("bytes_per_node_key", on(r.bytes_per_node_key(), J::Num)),
                ("agg_updates_received", J::Int(r.agg_in)),
                (
                    "convergence_ms",
                    on(r.convergence.as_ref(), |c| {
                        J::Obj(vec![
                            ("samples", J::Int(c.markers_seen as u64)),
                            ("unresolved_markers", J::Int(c.unresolved as u64)),
                            ("p50", J::Num(c.p50)),
                            ("p99", J::Num(c.p99)),
                            ("p999", J::Num(c.p999)),
                            ("max", J::Num(c.max)),
                        ])
                    }),
                ),
                (
                    "check",
                    on(r.check.as_ref(), |c| {
                        J::Obj(vec![
                            ("ok", J::Bool(c.ok)),
                            ("keys", J::Int(c.keys as u64)),
                            ("mismatches", J::Int(c.mismatches)),
                            ("converged_after_s", J::Num(c.converged_after_s)),
                            (
                                "example",
                                on(c.example.as_ref(), |(n, k, got, want)| {
                                    J::Obj(vec![
                                        ("node", J::Str(format!("node{}", n + 1))),
                                        ("key", J::Str(k.clone())),
                                        ("received", J::Int(*got as u64)),
                                        ("expected", J::Int(*want as u64)),
                                    ])
                                }),
                            ),
                        ])
                    }),
                ),
                ("table_used", on(r.table_used, J::Int)),
            ])
        })
        .collect();
    J::Obj(vec![("ok", J::Bool(ok)), ("phases", J::Arr(phases))]).to_string()
}
