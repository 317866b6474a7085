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
    for bad in ["postgres://localhost/0", "redis", "", "Memory"] {
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

/// With a good secret and no Redis, the binary exits (bounded by the timeout) with an
/// error naming `--store`, and does not print the secret.
#[test]
fn an_unreachable_redis_at_start_exits_naming_the_flag() {
    let secret = "a secret of at least thirty-two bytes";
    let (ok, text) = run_with_secret(
        &[
            "--store",
            "redis://127.0.0.1:1/0",
            "--redis-timeout-ms",
            "300",
        ],
        Some(secret),
    );
    assert!(!ok && text.contains("--store"), "{text}");
    assert!(!text.contains(secret), "the secret was printed: {text}");
}
