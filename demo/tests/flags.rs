//! The flags this issue added, and every numeric flag's refusal of a bad value; the
//! users file, read by the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton-demo"))
        .env_remove("BATON_REDIS_SECRET")
        .args(args)
        .output()
        .expect("the binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Every numeric flag, with a value past its range (where it has one clap checks).
const NUMERIC: [(&str, Option<&str>); 17] = [
    ("--redis-timeout-ms", Some("0")),
    ("--redis-replicas", Some("101")),
    ("--batch-window-ms", None),
    ("--min-rotation-interval-ms", None),
    ("--recovery-window-ms", None),
    ("--token-lifespan-secs", None),
    ("--max-clients-per-user", None),
    ("--sign-in-address-burst", Some("0")),
    ("--sign-in-address-refill-ms", Some("0")),
    ("--sign-in-account-burst", Some("4294967296")),
    ("--sign-in-account-refill-ms", Some("86400001")),
    ("--sign-in-throttle-keys", Some("1")),
    ("--sign-in-throttle-hold-ms", Some("60001")),
    ("--hash-workers", Some("0")),
    ("--hash-queue", Some("1000001")),
    ("--max-connections", Some("0")),
    ("--max-connections", Some("10000001")),
];

#[test]
fn every_numeric_flag_refuses_a_negative_or_malformed_value_by_name() {
    for (flag, past_range) in NUMERIC {
        for (value, why) in [
            ("-1", "must not be negative"),
            ("-0", "must not be negative"),
            ("x", "expected a whole number"),
            ("1.5", "expected a whole number"),
            ("", "expected a whole number"),
            ("99999999999999999999", "expected a whole number"),
        ]
        .into_iter()
        .chain(past_range.map(|v| (v, "expected a whole number from")))
        {
            // Both spellings: `--flag -1` must not be taken for an unknown flag `-1`.
            for args in [vec![flag, value], vec![&*format!("{flag}={value}")]] {
                let (ok, text) = run(&args);
                assert!(!ok, "{args:?} was accepted");
                assert!(
                    text.contains(flag),
                    "{args:?} does not name the flag: {text}"
                );
                assert!(text.contains(why), "{args:?}: {text}");
            }
        }
    }
}

#[test]
fn help_lists_the_new_flags_their_defaults_and_the_users_file_format() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    for needle in [
        "--users-file",
        "--sign-in-address-burst",
        "[default: 10]",
        "--sign-in-address-refill-ms",
        "[default: 6000]",
        "--sign-in-account-burst",
        "[default: 30]",
        "--sign-in-account-refill-ms",
        "[default: 2000]",
        "--sign-in-throttle-keys",
        "[default: 100000]",
        "--sign-in-throttle-hold-ms",
        "[default: 1000]",
        "--hash-workers",
        "one fewer than the cores",
        "--hash-queue",
        "[default: 16]",
        "--max-connections",
        "[default: 10000]",
        "EMAIL:$argon2id$",
        "lines starting with # are skipped",
        "429 with Retry-After",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &[u8], mode: u32) -> TempFile {
        let path = std::env::temp_dir().join(format!("baton-flags-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_bad_users_file_names_the_flag_and_line_and_never_a_password() {
    let f = TempFile::new(
        "bad",
        b"# ok so far\nann@example.com:hunter2-secret\nbob@example.com\n",
        0o600,
    );
    let (ok, text) = run(&["--users-file", f.arg()]);
    assert!(!ok);
    assert!(
        text.contains("--users-file") && text.contains("line 3"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    let f = TempFile::new(
        "hash",
        b"ann@example.com:$argon2id$v=19$nope-secret\n",
        0o600,
    );
    let (ok, text) = run(&["--users-file", f.arg()]);
    assert!(
        !ok && text.contains("line 1") && text.contains("Argon2"),
        "{text}"
    );
    assert!(!text.contains("nope-secret"), "{text}");

    let (ok, text) = run(&["--users-file", "/nonexistent/baton-users"]);
    assert!(
        !ok && text.contains("--users-file") && text.contains("cannot read"),
        "{text}"
    );
}

#[test]
fn no_demo_user_off_loopback() {
    let (ok, text) = run(&["--listen", "0.0.0.0:0"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("no users") && text.contains("--users-file"),
        "{text}"
    );
    assert!(!text.contains("demo-password"), "{text}");
}

/// A running server, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on a free loopback port, its address, and what it printed until then.
fn start(args: &[&str]) -> (Running, SocketAddr, String) {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_baton-demo"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap_or(0) > 0,
            "exited: {printed}"
        );
        printed.push_str(&line);
        if let Some(addr) = line.trim().strip_prefix("baton-demo listening on http://") {
            let addr = addr.parse().unwrap();
            // Keep reading stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
            return (child, addr, printed);
        }
    }
}

fn sign_in(addr: SocketAddr, email: &str, password: &str) -> u16 {
    let body = format!(r#"{{"email":"{email}","password":"{password}"}}"#);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /auth/sign_in HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn users_from_a_file_sign_in_by_password_and_by_hash_and_a_shared_file_is_warned_of() {
    let phc = {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        argon2::Argon2::default()
            .hash_password(b"by-hash", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    };
    let text = format!("# two users\nann@example.com:by-password\n\nbob@example.com:{phc}\n");
    let f = TempFile::new("good", text.as_bytes(), 0o644);
    let (mut child, addr, printed) = start(&["--users-file", f.arg()]);
    let statuses = [
        sign_in(addr, "ann@example.com", "by-password"),
        sign_in(addr, "bob@example.com", "by-hash"),
        sign_in(addr, "bob@example.com", "by-password"),
        sign_in(addr, "demo@example.com", "demo-password"),
    ];
    let mut err = child.0.stderr.take().unwrap();
    drop(child);
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    assert_eq!(statuses, [200, 200, 401, 401]);
    assert!(!printed.contains("demo user"), "{printed}");
    if cfg!(unix) {
        assert!(stderr.contains("readable by group or others"), "{stderr}");
    }
    assert!(
        !stderr.contains("by-password") && !stderr.contains("by-hash"),
        "{stderr}"
    );
}

#[test]
fn the_flags_reach_the_state_they_set() {
    use baton_demo::users::HashCost;
    use clap::Parser;
    let cli = baton_demo::Cli::try_parse_from([
        "baton-demo",
        "--listen",
        "0.0.0.0:0",
        "--user",
        "a@example.com:pw",
        "--sign-in-address-burst",
        "3",
        "--sign-in-address-refill-ms",
        "1500",
        "--sign-in-account-burst",
        "7",
        "--sign-in-account-refill-ms",
        "250",
        "--sign-in-throttle-keys",
        "99",
        "--sign-in-throttle-hold-ms",
        "0",
        "--hash-workers",
        "3",
        "--hash-queue",
        "0",
        "--max-connections",
        "123",
    ])
    .unwrap();
    // A user given: no demo user, and a non-loopback address is then fine.
    assert!(!cli.demo_user());
    let state = cli.state(HashCost::FAST).unwrap();
    let p = state.sign_in.guard.policy();
    assert_eq!(p.per_address.burst.get(), 3);
    assert_eq!(p.per_address.refill, Duration::from_millis(1500));
    assert_eq!(p.per_account.burst.get(), 7);
    assert_eq!(p.per_account.refill, Duration::from_millis(250));
    assert_eq!(p.max_keys, 99);
    assert_eq!(state.sign_in.hold, Duration::ZERO);
    assert_eq!(state.sign_in.pool.sizes(), (3, 0));
    assert_eq!(state.connections.max(), 123);
    assert!(state.users.find("a@example.com").is_some());
    assert!(state.users.find("demo@example.com").is_none());
}

#[test]
fn the_redis_flags_parse_into_the_cli_and_urls_never_show_a_password() {
    use baton_demo::cli::StoreArg;
    use clap::Parser;
    let parse = |args: &[&str]| {
        baton_demo::Cli::try_parse_from(std::iter::once("baton-demo").chain(args.iter().copied()))
    };
    let cli = parse(&[]).unwrap();
    assert_eq!(cli.redis_replicas, 0, "off by default");
    assert_eq!(cli.redis_ca_file, None);
    assert_eq!(cli.store, StoreArg::Memory);

    let cli = parse(&[
        "--store",
        "rediss+cluster://10.0.0.1:6379,10.0.0.2:6380",
        "--redis-replicas",
        "2",
        "--redis-ca-file",
        "/etc/baton/ca.pem",
    ])
    .unwrap();
    assert_eq!(cli.redis_replicas, 2);
    assert_eq!(cli.redis_ca_file, Some(PathBuf::from("/etc/baton/ca.pem")));
    assert_eq!(
        cli.store,
        StoreArg::Redis("rediss+cluster://10.0.0.1:6379,10.0.0.2:6380".to_owned())
    );
    assert_eq!(
        parse(&["--redis-replicas", "100"]).unwrap().redis_replicas,
        100
    );
    for bad in ["101", "-1", "x", ""] {
        let e = parse(&["--redis-replicas", bad]).unwrap_err().to_string();
        assert!(e.contains("--redis-replicas"), "{bad:?}: {e}");
    }
    let e = parse(&["--redis-ca-file"]).unwrap_err().to_string();
    assert!(e.contains("--redis-ca-file"), "{e}");

    // Every form, with a password holding the characters that end a host elsewhere
    // (`@`, `/`, `,`, `?`): Debug and the log's location hide all of it.
    for (url, debug, location) in [
        (
            "redis://ann:pa55@w/rd,x@127.0.0.1:6379/2",
            "Redis(redis://<redacted>@127.0.0.1:6379/2)",
            "redis://127.0.0.1:6379/2",
        ),
        (
            "rediss://:pa55@w?rd@cache.internal:6380",
            "Redis(rediss://<redacted>@cache.internal:6380?<redacted>)",
            "rediss://cache.internal:6380",
        ),
        (
            "redis+cluster://ann:pa55@w/rd,x@10.0.0.1:7000,10.0.0.2:7001",
            "Redis(redis+cluster://<redacted>@10.0.0.1:7000,10.0.0.2:7001)",
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
        ),
        (
            "rediss+cluster://ann:pa55@h1:7000,h2:7001/0?protocol=resp3",
            "Redis(rediss+cluster://<redacted>@h1:7000,h2:7001/0?<redacted>)",
            "rediss+cluster://h1:7000,h2:7001/0",
        ),
        (
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "Redis(redis+cluster://127.0.0.1:7000,127.0.0.1:7001)",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        ),
    ] {
        let cli = parse(&["--store", url]).unwrap();
        assert_eq!(format!("{:?}", cli.store), debug, "{url}");
        assert!(!format!("{cli:?}").contains("pa55"), "{url}");
        assert_eq!(baton_demo::cli::redis_location(url), location, "{url}");
    }
}
