//! The binary's flags: `--help` lists them, a bad value exits non-zero naming its flag.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    run_with_secret(args, None)
}

/// Runs the binary with `BATON_REDIS_SECRET` set to `secret`, or unset.
fn run_with_secret(args: &[&str], secret: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton-demo"));
    match secret {
        Some(s) => cmd.env("BATON_REDIS_SECRET", s),
        None => cmd.env_remove("BATON_REDIS_SECRET"),
    };
    let out = cmd.args(args).output().expect("the binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    for flag in [
        "--listen",
        "--metrics-listen",
        "--batch-window-ms",
        "--min-rotation-interval-ms",
        "--recovery-window-ms",
        "--token-lifespan-secs",
        "--max-clients-per-user",
        "--replay-policy",
        "--user",
        "--allowed-origins",
        "--store",
        "--redis-secret-file",
        "--redis-prefix",
        "--redis-timeout-ms",
        "--redis-ca-file",
        "--redis-replicas",
        "BATON_REDIS_SECRET",
    ] {
        assert!(text.contains(flag), "{flag} missing from\n{text}");
    }
    for default in [
        "127.0.0.1:3000",
        "127.0.0.1:9464",
        "[default: 5000]",
        "[default: 1209600]",
        "[default: reject]",
        "[default: memory]",
    ] {
        assert!(text.contains(default), "{default} missing from\n{text}");
    }
}

#[test]
fn a_bad_value_exits_non_zero_naming_the_flag() {
    let cases: [(&[&str], &str); 8] = [
        (&["--batch-window-ms", "x"], "--batch-window-ms"),
        (&["--batch-window-ms", "999999999999"], "--batch-window-ms"),
        (&["--token-lifespan-secs", "0"], "--token-lifespan-secs"),
        (
            &["--min-rotation-interval-ms", "999999999999"],
            "--min-rotation-interval-ms",
        ),
        (
            &["--recovery-window-ms", "999999999999"],
            "--recovery-window-ms",
        ),
        (&["--max-clients-per-user", "0"], "--max-clients-per-user"),
        (&["--replay-policy", "maybe"], "--replay-policy"),
        (&["--user", "no-colon"], "--user"),
    ];
    for (args, flag) in cases {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?} was accepted");
        assert!(text.contains(flag), "{args:?}: {text}");
    }
    let (ok, text) = run(&["--allowed-origins", "not an origin"]);
    assert!(!ok && text.contains("--allowed-origins"), "{text}");
    let (ok, text) = run(&["--listen", "nowhere"]);
    assert!(!ok && text.contains("--listen"), "{text}");
    for bad in [
        "postgres://localhost/0",
        "redis",
        "",
        "Memory",
        "cluster://127.0.0.1:7000",
        "redis+sentinel://127.0.0.1:26379",
        "REDIS://127.0.0.1:6379",
    ] {
        let (ok, text) = run(&["--store", bad]);
        assert!(!ok && text.contains("--store"), "{bad:?}: {text}");
    }
}

/// Checked before any connection is tried: port 1 has no Redis, and the error must
/// be about the secret, not about Redis.
#[test]
fn a_redis_store_without_a_good_secret_exits_naming_the_flag() {
    let redis = ["--store", "redis://127.0.0.1:1/0"];
    let (ok, text) = run_with_secret(&redis, None);
    assert!(!ok, "{text}");
    assert!(
        text.contains("--redis-secret-file") && text.contains("BATON_REDIS_SECRET"),
        "{text}"
    );
    let short = "only 31 bytes of secret, sorry.";
    let (ok, text) = run_with_secret(&redis, Some(short));
    assert!(
        !ok && text.contains("--redis-secret-file") && text.contains("31"),
        "{text}"
    );
    assert!(!text.contains(short), "the secret was printed: {text}");

    let dir = std::env::temp_dir().join(format!("baton-demo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{short}\n")).unwrap();
    let path = file.to_str().unwrap();
    let (ok, text) = run_with_secret(&[redis[0], redis[1], "--redis-secret-file", path], None);
    assert!(!ok && text.contains("--redis-secret-file"), "{text}");
    assert!(!text.contains(short), "the secret was printed: {text}");
    let missing = dir.join("absent").to_str().unwrap().to_owned();
    let (ok, text) = run_with_secret(
        &[
            "--store",
            "redis://127.0.0.1:1/0",
            "--redis-secret-file",
            &missing,
        ],
        None,
    );
    assert!(!ok && text.contains("--redis-secret-file"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_store_form_and_what_a_failover_loses() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    // However the lines are wrapped.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "redis://[USER:PASS@]HOST:PORT[/DB]",
        "rediss://[USER:PASS@]HOST:PORT[/DB]",
        "redis+cluster://[USER:PASS@]H1:P1,H2:P2,...",
        "rediss+cluster://",
        "never logged",
        // Without replica acknowledgement: each write's loss, and what the client sees.
        "a lost rotation leaves the previous token current again",
        "a lost sign-out brings the session back",
        "a lost sign-in",
        // With it: the guarantee, its price, and the answer when no replica acks.
        "nothing that was answered 2xx is lost",
        "one replica round trip per write",
        "the request answers 503 and the client keeps the token it sent",
        "Redis need not answer at start",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
}

/// Settings Redis cannot fix by coming up: each exits at once naming its flag, before
/// any connection (port 1 has no Redis; an attempt would wait for the timeout and
/// then serve 503s instead of exiting).
#[test]
fn a_bad_ca_file_or_a_redis_flag_without_redis_exits_naming_the_flag() {
    let secret = Some("a secret of at least thirty-two bytes");
    let dir = std::env::temp_dir().join(format!("baton-demo-cli-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let missing = dir.join("absent.pem");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--store",
                "rediss://127.0.0.1:1/0",
                "--redis-ca-file",
                missing,
            ],
            "--redis-ca-file",
        ),
        (
            &[
                "--store",
                "rediss+cluster://127.0.0.1:1,127.0.0.1:2",
                "--redis-ca-file",
                not_pem,
            ],
            "--redis-ca-file",
        ),
        // A CA file asks for TLS: a plain-text URL with one is a mistake, not a downgrade.
        (
            &[
                "--store",
                "redis://127.0.0.1:1/0",
                "--redis-ca-file",
                not_pem,
            ],
            "--redis-ca-file",
        ),
        (&["--redis-ca-file", not_pem], "--redis-ca-file"),
        (&["--redis-replicas", "1"], "--redis-replicas"),
        (&["--store", "redis://127.0.0.1:notaport/0"], "--store"),
    ];
    for (args, flag) in cases {
        let (ok, text) = run_with_secret(args, secret);
        assert!(!ok, "{args:?} was accepted: {text}");
        assert!(text.contains(flag), "{args:?}: {text}");
        assert!(!text.contains("listening"), "{args:?}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a good secret and no Redis, the binary starts anyway, says in its log that
/// Redis is not reachable yet (naming the host, never the password or the secret),
/// and serves. `tests/redis_cluster.rs` checks the 503s and the recovery.
#[test]
fn an_unreachable_redis_at_start_is_logged_and_the_server_starts() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let secret = "a secret of at least thirty-two bytes";
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton-demo"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--store", "redis://ann:pa55word@127.0.0.1:1/0"])
        .args(["--redis-timeout-ms", "300"])
        .env("BATON_REDIS_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let listening = loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        printed.push_str(&line);
        if line.starts_with("baton-demo listening on http://") {
            break true;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(listening, "exited: {printed}{log}");
    assert!(
        log.contains(
            "redis at redis://127.0.0.1:1/0 not reachable yet: answering 503 until it answers"
        ),
        "{log}"
    );
    assert!(
        !log.contains("pa55word") && !printed.contains("pa55word"),
        "{log}"
    );
    assert!(!log.contains(secret) && !printed.contains(secret), "{log}");
}
