//! `sundial cron next` as a child process: offline, from `--after`, with the strict parser's
//! messages.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sundial");

fn cron_next(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("cron").arg("next").args(args).output().unwrap()
}

#[test]
fn cron_next_after_prints_the_times_after_it_across_a_dst_gap() {
    let out = cron_next(&["30 2 * * *", "--timezone", "Europe/Berlin", "--after", "2026-03-27T12:00:00Z", "-n", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "2026-03-28T02:30:00+01:00\n2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n"
    );
}

#[test]
fn cron_next_refuses_bad_input_naming_field_and_value() {
    let out = cron_next(&["0 0 * MON *"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expr: month field: \"MON\" is a day-of-week name"), "{err}");
    let out = cron_next(&["0 0 * * *", "--after", "tomorrow"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--after"));
}
