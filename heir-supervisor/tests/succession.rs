//! Succession against a real Postgres with real processes and real signals.
//! See tests/common/mod.rs for the recording child and the Postgres requirement.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;

const S: Duration = Duration::from_secs(1);

fn started_by(member: &'static str) -> impl Fn(&[Rec]) -> bool {
    move |r: &[Rec]| r.iter().any(|r| r.kind == "start" && r.member == member)
}

fn start_of<'a>(recs: &'a [Rec], member: &str) -> &'a Rec {
    recs.iter()
        .find(|r| r.kind == "start" && r.member == member)
        .unwrap_or_else(|| panic!("no start of {member}"))
}

fn grandchild_of(recs: &[Rec], member: &str) -> i32 {
    recs.iter()
        .find(|r| r.kind == "grandchild" && r.member == member)
        .map(|r| r.pid)
        .unwrap_or_else(|| panic!("no grandchild of {member}"))
}

/// Start members one after another, each registered before the next starts, so the order of
/// registration is known.
fn line_up(c: &mut Cluster, names: &[&'static str], extra: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        c.spawn(n, extra);
        c.wait_registered(i + 1, 10 * S);
    }
}

#[test]
fn three_members_one_child_kill9_passes_in_registration_order() {
    let Some(mut c) = Cluster::new("kill9") else {
        return;
    };
    line_up(&mut c, &["m1", "m2", "m3"], &[]);
    c.wait_for("m1's child to start", 10 * S, started_by("m1"));
    assert_eq!(c.line(), ["m1", "m2", "m3"]);

    // Exactly one child runs while the three members idle.
    sleep(2 * S);
    let starts = c.starts();
    assert_eq!(starts.len(), 1, "exactly one child: {starts:?}");
    assert_eq!(starts[0].member, "m1");

    for (victim, next) in [("m1", "m2"), ("m2", "m3")] {
        // The child records its grandchild a moment after its own start: wait for both (a
        // takeover observed by its start alone raced that record).
        let recs = c.wait_for(&format!("{victim}'s grandchild"), 10 * S, |r: &[Rec]| {
            r.iter()
                .any(|r| r.kind == "grandchild" && r.member == victim)
        });
        let child = start_of(&recs, victim).pid;
        let grandchild = grandchild_of(&recs, victim);
        let killed_at = mono_ns();
        c.signal(victim, libc::SIGKILL);
        // The child's whole process group goes with its supervisor, grandchildren included.
        assert!(
            wait_gone(&[child, grandchild], S),
            "{victim}'s child {child} or grandchild {grandchild} survived kill -9 of its supervisor"
        );
        // SAFETY: signal 0 probes the process group.
        assert_ne!(
            unsafe { libc::kill(-child, 0) },
            0,
            "process group {child} still exists"
        );

        let recs = c.wait_for(&format!("{next} to take over"), 10 * S, started_by(next));
        let took = start_of(&recs, next).ns - killed_at;
        eprintln!("takeover {victim} → {next}: {:.0} ms", ms(took));
        assert!(
            took < 5_000_000_000,
            "takeover took {:.0} ms (> 5 s)",
            ms(took)
        );
        assert_eq!(c.starts().len(), if next == "m2" { 2 } else { 3 });
    }
    let order: Vec<String> = c.starts().into_iter().map(|r| r.member).collect();
    assert_eq!(order, ["m1", "m2", "m3"], "succession = registration order");
    assert_never_two(&c.records());
}

#[test]
fn member_added_live_joins_the_line() {
    let Some(mut c) = Cluster::new("join") else {
        return;
    };
    line_up(&mut c, &["m1", "m2"], &[]);
    c.wait_for("m1 leads", 10 * S, started_by("m1"));
    sleep(2 * S);
    // m3 joins while m1 leads: it goes to the back of the line.
    c.spawn("m3", &[]);
    c.wait_registered(3, 10 * S);
    assert_eq!(c.line(), ["m1", "m2", "m3"]);
    c.signal("m1", libc::SIGTERM);
    c.wait_for("m2 leads", 10 * S, started_by("m2"));
    c.signal("m2", libc::SIGTERM);
    c.wait_for("m3 leads", 10 * S, started_by("m3"));
    let order: Vec<String> = c.starts().into_iter().map(|r| r.member).collect();
    assert_eq!(order, ["m1", "m2", "m3"]);
    assert_eq!(c.line(), ["m3"], "m1 and m2 deregistered");
    assert_never_two(&c.records());
}

#[test]
fn sigterm_hands_over_without_waiting_for_the_ttl() {
    let Some(mut c) = Cluster::new("sigterm") else {
        return;
    };
    // A long TTL: a handover that waited for it would take > 10 s.
    let slow = ["--ttl", "10", "--interval", "1", "--margin", "3"];
    line_up(&mut c, &["m1", "m2"], &slow);
    c.wait_for("m1 leads", 10 * S, started_by("m1"));
    let asked = mono_ns();
    c.signal("m1", libc::SIGTERM);
    let recs = c.wait_for("m2 leads", 10 * S, started_by("m2"));
    let took = start_of(&recs, "m2").ns - asked;
    eprintln!("SIGTERM handover: {:.0} ms", ms(took));
    assert!(took < 2_000_000_000, "handover took {:.0} ms", ms(took));
    let stop = recs
        .iter()
        .find(|r| r.kind == "stop" && r.member == "m1")
        .expect("m1's child got SIGTERM and recorded its stop");
    assert!(
        stop.ns < start_of(&recs, "m2").ns,
        "m2 started before m1's child stopped"
    );
    assert_eq!(
        c.wait_exit("m1", 5 * S),
        Some(0),
        "m1 exits 0 after handing over"
    );
    assert_eq!(c.line(), ["m2"]);
    assert_never_two(&c.records());
}

#[test]
fn sigstop_longer_than_ttl_never_runs_two_children() {
    let Some(mut c) = Cluster::new("sigstop") else {
        return;
    };
    line_up(&mut c, &["m1", "m2"], &[]);
    c.wait_for("m1 leads", 10 * S, started_by("m1"));
    sleep(S);
    // Freeze m1's supervisor (not its child) for twice the TTL.
    c.signal("m1", libc::SIGSTOP);
    let frozen_at = mono_ns();
    let recs = c.wait_for("m2 takes over", 10 * S, started_by("m2"));
    let m2_start = start_of(&recs, "m2").ns;
    eprintln!(
        "m2 started {:.0} ms after the freeze",
        ms(m2_start - frozen_at)
    );
    sleep(Duration::from_nanos(
        (frozen_at + 6_000_000_000).saturating_sub(mono_ns()),
    ));
    c.signal("m1", libc::SIGCONT);
    sleep(3 * S);

    let recs = c.records();
    assert_never_two(&recs);
    let ls = lives(&recs);
    assert_eq!(ls.len(), 2, "m1's and m2's children only: {ls:?}");
    let m1 = &ls[0];
    assert_eq!(m1.member, "m1");
    assert!(
        m1.stopped_cleanly,
        "the guard fenced m1's child with SIGTERM"
    );
    eprintln!(
        "m1's child fenced {:.0} ms before m2's started",
        ms(m2_start - m1.end)
    );
    // m2's child still runs after m1 woke up: no flapping back.
    let last_beat = recs
        .iter()
        .filter(|r| r.member == "m2")
        .map(|r| r.ns)
        .max()
        .unwrap_or(0);
    assert!(mono_ns() - last_beat < 1_000_000_000, "m2's child stopped");
    // m1 rejoined at the back of the line.
    assert_eq!(c.line(), ["m2", "m1"]);
}

#[test]
fn leader_cut_off_from_the_db_fences_itself_before_the_heir_starts() {
    let Some(mut c) = Cluster::new("partition") else {
        return;
    };
    let (host, port) = dsn_host_port(&c.dsn);
    let proxy = Proxy::start((host, port));
    let via_proxy = with_host_port(&c.dsn, "127.0.0.1", proxy.port);
    c.spawn_with_dsn("m1", &[], &via_proxy);
    c.wait_registered(1, 10 * S);
    c.spawn("m2", &[]);
    c.wait_registered(2, 10 * S);
    c.wait_for("m1 leads", 10 * S, started_by("m1"));
    sleep(S);
    let cut_at = mono_ns();
    proxy.cut();
    let recs = c.wait_for("m2 takes over", 10 * S, started_by("m2"));
    let m2_start = start_of(&recs, "m2").ns;
    let ls = lives(&recs);
    eprintln!(
        "m1 fenced {:.0} ms after the cut; m2 started {:.0} ms after the cut",
        ms(ls[0].end - cut_at),
        ms(m2_start - cut_at)
    );
    assert!(ls[0].stopped_cleanly, "m1's child was fenced (SIGTERM)");
    proxy.heal();
    sleep(4 * S);
    let recs = c.records();
    assert_never_two(&recs);
    assert_eq!(lives(&recs).len(), 2);
    assert_eq!(
        c.line(),
        ["m2", "m1"],
        "m1 rejoined behind m2 once the link healed"
    );
}

#[test]
fn child_failing_as_leader_hands_over() {
    let Some(mut c) = Cluster::new("childfail") else {
        return;
    };
    line_up(&mut c, &["m1", "m2"], &[]);
    let recs = c.wait_for("m1 leads", 10 * S, started_by("m1"));
    let child = start_of(&recs, "m1").pid;
    let at = mono_ns();
    // SAFETY: killing the child process we observed.
    unsafe { libc::kill(child, libc::SIGKILL) };
    let recs = c.wait_for("m2 leads", 10 * S, started_by("m2"));
    let took = start_of(&recs, "m2").ns - at;
    eprintln!("child failure handover: {:.0} ms", ms(took));
    assert!(took < 2_000_000_000);
    assert_never_two(&recs);
    // m1 stands aside (out of line) for the hold-off, then rejoins at the back.
    c.wait_registered(2, 10 * S);
    assert_eq!(c.line(), ["m2", "m1"], "m1 went to the back of the line");
}

#[test]
fn a_command_that_cannot_start_backs_off_and_leaves_the_lease_to_one_that_can() {
    let Some(mut c) = Cluster::new("nostart") else {
        return;
    };
    // Short hold-off: without the back-off m1 would retry ~every 0.6 s.
    let fast = ["--hold-off", "0.1"];
    let dsn = c.dsn.clone();
    c.spawn_cmd(
        "m1",
        &fast,
        &dsn,
        &["/nonexistent/heir-test-cmd".to_string()],
    );
    let failures = |c: &Cluster| c.log("m1").matches("event child_failed").count();
    sleep(6 * S);
    let n = failures(&c);
    // Attempts at ≈ 0, 1, 3 s (back-off 1, 2, 4 s): 3, or 4 on a slow start.
    assert!(
        (2..=4).contains(&n),
        "{n} failed starts in 6 s:\n{}",
        c.log("m1")
    );
    let log = c.log("m1");
    assert!(
        log.contains("No such file or directory"),
        "the OS error is reported: {log}"
    );
    assert_eq!(
        log.matches("No such file or directory").count(),
        n,
        "one line per attempt: {log}"
    );
    // A member whose command works takes the lease, though m1 registered first.
    c.spawn("m2", &fast);
    let recs = c.wait_for("m2 leads", 15 * S, started_by("m2"));
    assert_eq!(start_of(&recs, "m2").member, "m2");
    // m1 rejoins behind m2 and stops failing: it is a standby now.
    c.wait_registered(2, 20 * S);
    assert_eq!(c.line(), ["m2", "m1"]);
    let settled = failures(&c);
    sleep(3 * S);
    assert_eq!(failures(&c), settled, "m1 kept trying while m2 leads");
    assert_eq!(c.starts().len(), 1);
}

#[test]
fn warm_standby_takes_over_with_its_prestarted_child() {
    let Some(mut c) = Cluster::new("warm") else {
        return;
    };
    line_up(&mut c, &["m1", "m2"], &["--warm"]);
    c.wait_for("m1 leads", 10 * S, started_by("m1"));
    let recs = c.wait_for("m2's warm child is ready", 10 * S, |r| {
        r.iter().any(|r| r.kind == "ready" && r.member == "m2")
    });
    let ready_pid = recs
        .iter()
        .find(|r| r.kind == "ready" && r.member == "m2")
        .map(|r| r.pid)
        .expect("ready");
    sleep(S);
    assert_eq!(c.starts().len(), 1, "the warm standby does not start work");
    let killed_at = mono_ns();
    c.signal("m1", libc::SIGKILL);
    let recs = c.wait_for("m2 takes over", 10 * S, started_by("m2"));
    let s = start_of(&recs, "m2");
    assert_eq!(s.pid, ready_pid, "the pre-started child was told to go");
    eprintln!("warm takeover: {:.0} ms", ms(s.ns - killed_at));
    assert!(s.ns - killed_at < 5_000_000_000);
    assert_never_two(&recs);
}
