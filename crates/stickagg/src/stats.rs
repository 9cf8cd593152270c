//! The stats socket: a Unix (or TCP) socket that operators talk to with
//! socat, like HAProxy's. This file only moves lines; commands are answered
//! by the hub (`commands.rs`), which owns the state, so a slow client never
//! holds anything the engine needs.
//!
//! As in HAProxy: one command per line, several separated by `;`, and
//! `prompt` switches the connection to interactive mode (a `> ` prompt, the
//! connection stays open until `quit`).

use crate::config::{StatsAddr, StatsSocket};
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};

/// One command for the hub, with where to send the answer.
pub struct StatsRequest {
    pub line: String,
    pub reply: oneshot::Sender<String>,
}

/// Longest command line accepted; longer input closes the connection.
const MAX_LINE: usize = 64 * 1024;

pub async fn spawn(conf: &StatsSocket, hub: mpsc::Sender<StatsRequest>) -> std::io::Result<()> {
    match &conf.addr {
        StatsAddr::Unix(path) => {
            // A stale socket file from a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
                let _ = std::fs::remove_file(path);
            }
            let sock = UnixListener::bind(path)?;
            let mode = conf.mode.unwrap_or(0o600);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tokio::spawn(async move {
                while let Ok((stream, _)) = sock.accept().await {
                    tokio::spawn(client(stream, hub.clone()));
                }
            });
        }
        StatsAddr::Tcp(addr) => {
            let sock = TcpListener::bind(addr).await?;
            tokio::spawn(async move {
                while let Ok((stream, _)) = sock.accept().await {
                    tokio::spawn(client(stream, hub.clone()));
                }
            });
        }
    }
    Ok(())
}

async fn client<S: AsyncRead + AsyncWrite + Unpin>(stream: S, hub: mpsc::Sender<StatsRequest>) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut interactive = false;
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut rd).take(MAX_LINE as u64).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = String::new();
        let mut quit = !interactive;
        for cmd in line.trim_end_matches(['\r', '\n']).split(';') {
            let cmd = cmd.trim();
            match cmd {
                "" => {}
                "prompt" => {
                    interactive = !interactive;
                    quit = !interactive;
                }
                "quit" => {
                    quit = true;
                    break;
                }
                _ => {
                    let (tx, rx) = oneshot::channel();
                    if hub
                        .send(StatsRequest {
                            line: cmd.to_string(),
                            reply: tx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    out.push_str(&rx.await.unwrap_or_default());
                }
            }
        }
        if interactive && !quit {
            // HAProxy ends each answer with an empty line, then the prompt.
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str("> ");
        }
        if wr.write_all(out.as_bytes()).await.is_err() || quit {
            let _ = wr.shutdown().await;
            return;
        }
    }
}
