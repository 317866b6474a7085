//! The binary's flags: `--help` lists them, a bad value exits non-zero naming its flag.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton-demo"))
        .args(args)
        .output()
        .expect("the binary runs");
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
        "--batch-window-ms",
        "--min-rotation-interval-ms",
        "--recovery-window-ms",
        "--token-lifespan-secs",
        "--max-clients-per-user",
        "--replay-policy",
        "--user",
        "--allowed-origins",
    ] {
        assert!(text.contains(flag), "{flag} missing from\n{text}");
    }
    for default in [
        "127.0.0.1:3000",
        "[default: 5000]",
        "[default: 1209600]",
        "[default: reject]",
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
}
