//! The load simulator (`stickagg-bench`) against a stickagg it starts
//! itself: simulated nodes over real TCP, and every total stickagg pushes
//! back into their `.agg` tables must be exact once the load is over.
//! Correctness only: nothing here depends on timing (nets 240–243).

use std::process::Command;

fn bench(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stickagg-bench"))
        .args(["--spawn", "--stickagg", env!("CARGO_BIN_EXE_stickagg")])
        .args(["--json", "--quiet", "--settle", "120"])
        .args(extra)
        .output()
        .expect("run stickagg-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stickagg-bench {extra:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// 3 nodes × 1000 keys for 2 s, uniform keys at 5000 updates/s per node.
#[test]
fn three_nodes_exact_totals() {
    let json = bench(&[
        "--net", "240", "-n", "3", "-k", "1000", "-d", "2", "-r", "5000",
    ]);
    assert!(json.starts_with("{\"ok\":true,"), "{json}");
    assert!(
        json.contains("\"check\":{\"ok\":true,\"keys\":1000,\"mismatches\":0"),
        "{json}"
    );
    // Every node received `.agg` updates.
    assert!(!json.contains("\"agg_updates_received\":0,"), "{json}");
}

/// Every key from every node first, then a fixed number of Zipf-distributed
/// updates as fast as possible, with two counters and two rates.
#[test]
fn fill_then_zipf_exact_totals() {
    let json = bench(&[
        "--net",
        "241",
        "-n",
        "4",
        "-k",
        "2000",
        "--fill",
        "--updates",
        "5000",
        "--dist",
        "zipf:1.1",
        "--store",
        "conn_cnt,conn_rate(3s),http_req_rate(10s),http_req_cnt",
    ]);
    assert!(json.starts_with("{\"ok\":true,"), "{json}");
    assert!(
        json.contains("\"check\":{\"ok\":true,\"keys\":2000,\"mismatches\":0"),
        "{json}"
    );
    assert!(json.contains("\"fill\":{\"updates\":8000,"), "{json}");
}

/// The check is not vacuous: against an aggregator that writes `.sum`
/// tables, the nodes' `.agg` tables stay empty and the simulator exits
/// with status 1.
#[test]
fn missing_totals_fail_the_run() {
    let dir = std::env::temp_dir().join(format!("stickagg-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("stickagg.cfg");
    std::fs::write(
        &cfg,
        "global\n\naggregations x\n    from any to .sum\n    dynamic-peers\n    peer gpe 127.0.242.1:10000 local\n",
    )
    .unwrap();
    let mut agg = Command::new(env!("CARGO_BIN_EXE_stickagg"))
        .arg("-f")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect("127.0.242.1:10000").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "stickagg did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stickagg-bench"))
        .args([
            "--target",
            "127.0.242.1:10000",
            "--pid",
            &agg.id().to_string(),
        ])
        .args([
            "-n", "2", "-k", "100", "-d", "1", "-r", "200", "--settle", "2",
        ])
        .args(["--json", "--quiet"])
        .output()
        .expect("run stickagg-bench");
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert!(json.starts_with("{\"ok\":false,"), "{json}");
    assert!(json.contains("\"check\":{\"ok\":false"), "{json}");
}

/// `kill -9` of stickagg after the fill, and a restart: the nodes reconnect,
/// teach the new process everything on its resync request, and every node
/// holds the exact totals again (what it had received before is forgotten,
/// so these come from the new process); the load after it is exact too.
#[test]
fn restart_relearns_exact_totals() {
    let json = bench(&[
        "--net",
        "243",
        "-n",
        "3",
        "-k",
        "2000",
        "--restart",
        "-d",
        "1",
        "-r",
        "2000",
    ]);
    assert!(json.starts_with("{\"ok\":true,"), "{json}");
    assert!(
        json.contains("\"restart\":{\"entries\":6000,\"seconds_to_exact\":"),
        "{json}"
    );
    assert!(
        json.contains("\"check\":{\"ok\":true,\"keys\":2000,\"mismatches\":0"),
        "{json}"
    );
}

/// A run whose contributions could lapse before the final check (table
/// `expire` shorter than the load plus the settle time) is refused up front
/// rather than reported as a mismatch.
#[test]
fn expire_shorter_than_the_run_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_stickagg-bench"))
        .args(["--spawn", "--net", "243", "-d", "5", "--settle", "10"])
        .args(["--expire", "10000", "--quiet"])
        .output()
        .expect("run stickagg-bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--expire 10000 ms does not outlast"), "{err}");
}
