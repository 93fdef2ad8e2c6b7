//! The binary's configuration errors: one line naming the variable, exit 2.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_setting_exits_2_with_one_line_naming_it() {
    for (var, value) in [
        ("PARTNER_TIMEOUT_MS", "soon"),
        ("BIND_ADDR", "nowhere"),
        ("DATABASE_URL", "mysql://x/y"),
    ] {
        let (code, stderr) = run(&["migrate"], &[(var, value)]);
        assert_eq!(code, 2, "{var}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[test]
fn serve_refuses_to_start_without_an_ops_token() {
    let (code, stderr) = run(&["serve"], &[("PAYMENT_GATEWAY_URL", "http://127.0.0.1:9")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("OPS_TOKEN"), "{stderr}");
}
