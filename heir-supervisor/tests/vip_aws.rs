//! The `aws` floating-IP driver against an EC2 API server (moto), through the DB failover.
//!
//! Set-up: a real PostgreSQL pair (tests/pgpair.sh, pair 46: nodes 10.213.46.11/.12, floating
//! IP 10.213.46.100/24); moto on the pair's bridge (10.213.46.1:5056) with a VPC, a subnet
//! 10.213.46.0/24 and one ENI per node with the node's address as primary IP; an IAM role
//! `heir-db` allowed exactly what src/vip/aws.rs documents; an IMDSv2 responder on the bridge
//! that tells each node (by source address) its region, its eth0's MAC, the ENI of that MAC and
//! the role's temporary credentials (the instance profile). Then moto enforces IAM: every
//! request must be signed by a known key whose policies allow the action.
//!
//! 1. Errors, the driver built and called as `heir-supervisor db node` does (`Vip::new`,
//!    `acquire`), from the test process:
//!    * an ENI id that does not exist → the message names the ENI and
//!      `InvalidNetworkInterfaceID.NotFound`;
//!    * a role without `ec2:AssignPrivateIpAddresses` → the message names the action and the
//!      denial; nothing was assigned;
//!    * `--vip-dev` naming an interface whose MAC is no ENI of the instance → the metadata
//!      path and its 404;
//!    * the metadata service out of reach → the metadata path, the endpoint and what to check.
//!
//!    None of them is an SDK debug dump.
//! 2. Failover: the supervisors started as tests/db_failover.rs starts them, with
//!    `--vip-driver aws`; the primary `a` holds the floating IP (moto shows it on a's ENI);
//!    kill -9 of a's PostgreSQL → `b` is promoted, the address is on b's ENI in moto and on b's
//!    eth0, writes through it resume, no acknowledged commit is missing.
//!
//! moto's `AssignPrivateIpAddresses` ignores `AllowReassignment`: it adds the address to the
//! new ENI without taking it from the old one (EC2 moves it). So the test asserts that the new
//! holder's ENI has the address at once; the old holder's ENI loses it only when the old
//! primary's supervisor releases it (`UnassignPrivateIpAddresses`).
//!
//! One test function: the driver reads its endpoints from the process environment
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_ENDPOINT_URL`), which is set here before any other
//! thread starts; parallel tests in this binary would race on it.
//!
//! Needs what the DB tests need (root, PostgreSQL 15) plus python3 and curl for moto
//! (tests/aws/moto.sh installs it into .cache/moto-venv); `HEIR_DB_TESTS_SKIP=1` skips.

mod aws_common;
mod db_common;

use std::net::{IpAddr, Ipv4Addr};
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_common::imds::{Imds, Instance};
use aws_common::*;
use db_common::*;
use futures_util::FutureExt;
use heir_supervisor::vip::{DriverKind, Vip, VipAddr};

const PAIR: u8 = 46;
const MOTO_PORT: u16 = 5056;

/// What the role of the DB hosts may do (src/vip/aws.rs).
const DB_ACTIONS: [&str; 3] = [
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:DescribeNetworkInterfaces",
];

fn moto_prerequisites() -> Option<()> {
    let missing: Vec<&str> = ["python3", "curl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    if std::env::var("HEIR_DB_TESTS_SKIP").is_ok_and(|v| v == "1") {
        eprintln!(
            "vip_aws: SKIPPED (HEIR_DB_TESTS_SKIP=1): missing {}",
            missing.join(", ")
        );
        return None;
    }
    panic!(
        "vip_aws: cannot run, missing {} for moto (set HEIR_DB_TESTS_SKIP=1 to skip on purpose)",
        missing.join(", ")
    );
}

/// Abort the whole test process if it runs too long, stopping moto and the pair.
fn watchdog(limit: Duration, moto_addr: String) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; stopping moto and pair {PAIR}");
        Moto::down(&moto_addr);
        let _ = Command::new(script())
            .arg("down")
            .env("HF_PAIR", PAIR.to_string())
            .status();
        std::process::exit(101);
    });
}

fn eth0_mac(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/sys/class/net/eth0/address"])
        .output()
        .expect("reading eth0's MAC");
    assert!(out.status.success(), "MAC of eth0 in {ns}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A person reads the message: no SDK structure dumped with `{:?}`.
fn assert_readable(err: &str) {
    for dump in ["ServiceError", "ErrorMetadata", "Some(", "{ ", "raw: "] {
        assert!(!err.contains(dump), "debug dump ({dump:?}) in: {err}");
    }
}

#[test]
fn aws_driver_moves_the_floating_ip_between_enis_and_reports_errors() {
    if prerequisites("vip_aws").is_none() || moto_prerequisites().is_none() {
        return;
    }
    let mut pair = Pair::up(PAIR);
    let bridge: Ipv4Addr = format!("{}.1", pair.net()).parse().unwrap();
    let imds_listener = std::net::TcpListener::bind((bridge, 0)).expect("bind the IMDS responder");
    let moto_addr = format!("{bridge}:{MOTO_PORT}");
    // Only this thread runs yet: the environment of the driver (here) and of the supervisors
    // (inherited). Credentials come from the instance profile (IMDS), as on EC2.
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{}", imds_listener.local_addr().unwrap()),
    );
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://{moto_addr}"));
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/heirflow-vip-aws/config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/heirflow-vip-aws/credentials",
    );
    watchdog(Duration::from_secs(240), moto_addr.clone());
    let moto = Moto::up(&moto_addr);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let res = rt.block_on(async {
        let imds = Imds::start(imds_listener);
        let res = tokio::time::timeout(
            Duration::from_secs(180),
            AssertUnwindSafe(scenario(&mut pair, &moto, &imds)).catch_unwind(),
        )
        .await;
        if !matches!(res, Ok(Ok(()))) {
            pair.dump_logs();
            eprintln!("----- IMDS requests (last 30) -----");
            let log = imds.log();
            for l in &log[log.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
        res
    });
    drop(rt);
    match res {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("test timed out"),
    }
    // Dropped here, and on a panic too: moto (stopped), then the pair (supervisors, namespaces).
}

async fn scenario(pair: &mut Pair, moto: &Moto, imds: &Imds) {
    let t0 = Instant::now();
    let url = moto.url();
    let net = pair.net();
    let vip = pair.vip();
    let vip_addr: VipAddr = format!("{vip}/24").parse().unwrap();

    // EC2 and IAM, while moto does not check anything yet.
    let setup = creds("testing", "testing", None);
    let enis = enis(&ec2(&url, setup.clone()), &net, &[11, 12]).await;
    let (eni_a, eni_b) = (enis[0].clone(), enis[1].clone());
    let iam = iam(&url, setup.clone());
    let sts = sts(&url, setup);
    let db_role = role(&iam, "heir-db", &DB_ACTIONS).await;
    let no_assign = role(
        &iam,
        "heir-db-no-assign",
        &[
            "ec2:UnassignPrivateIpAddresses",
            "ec2:DescribeNetworkInterfaces",
        ],
    )
    .await;
    let admin = ec2(&url, admin(&iam, "heir-test").await);
    for (node, eni) in [("a", &eni_a), ("b", &eni_b)] {
        let ip: IpAddr = pair.addr(node).parse().unwrap();
        imds.set(
            ip,
            Instance {
                region: REGION.into(),
                mac: eth0_mac(&pair.ns(node)),
                eni: eni.clone(),
                creds: assume(&sts, &db_role, &pair.ns(node)).await,
            },
        );
    }
    // The test process's own sessions (errors below), before IAM is enforced.
    let wrong_eni_creds = assume(&sts, &db_role, "wrong-eni").await;
    let no_assign_creds = assume(&sts, &no_assign, "no-assign").await;
    moto.enforce_iam(true).await;
    assert!(
        holders(&admin, &enis, &vip).await.is_empty(),
        "nobody holds {vip} yet"
    );
    eprintln!(
        "moto: ENIs {eni_a} (a), {eni_b} (b); IAM enforced; set up in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // 1. Errors. The test process is one more "instance" (the bridge address), with "auto" as
    //    the interface: region, MAC and ENI all come from the metadata service.
    let me: IpAddr = format!("{net}.1").parse().unwrap();
    let instance = |eni: &str, creds| Instance {
        region: REGION.into(),
        mac: "02:00:0a:d5:2e:01".into(),
        eni: eni.into(),
        creds,
    };
    let bogus = "eni-0123456789abcdef0";
    imds.set(me, instance(bogus, wrong_eni_creds));
    let drv = Vip::new(DriverKind::Aws, Some(vip_addr), "auto")
        .await
        .expect("the driver from instance metadata");
    assert!(drv.describe().contains(bogus), "{}", drv.describe());
    let err = format!(
        "{:#}",
        drv.acquire().await.expect_err("acquire on a missing ENI")
    );
    eprintln!("wrong ENI: {err}");
    assert!(err.contains(bogus), "names the ENI: {err}");
    assert!(
        err.contains("InvalidNetworkInterfaceID.NotFound"),
        "names the AWS error code: {err}"
    );
    assert_readable(&err);

    imds.set(me, instance(&eni_a, no_assign_creds));
    let drv = Vip::new(DriverKind::Aws, Some(vip_addr), "auto")
        .await
        .expect("the driver from instance metadata");
    let err = format!(
        "{:#}",
        drv.acquire().await.expect_err("acquire without permission")
    );
    eprintln!("no permission: {err}");
    assert!(
        err.contains("AccessDenied") || err.contains("UnauthorizedOperation"),
        "names the denial: {err}"
    );
    assert!(
        err.contains("ec2:AssignPrivateIpAddresses") && err.contains("not authorized"),
        "names the action: {err}"
    );
    assert!(err.contains(&eni_a), "names the ENI: {err}");
    assert_readable(&err);
    assert!(
        holders(&admin, &enis, &vip).await.is_empty(),
        "a denied request assigned nothing"
    );

    let br = format!("hfp{PAIR}br");
    let err = match Vip::new(DriverKind::Aws, Some(vip_addr), &br).await {
        Ok(_) => panic!("{br}'s MAC is no ENI of this instance"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("interface without ENI: {err}");
    assert!(
        err.contains("instance metadata /latest/meta-data/network/interfaces/macs/")
            && err.contains("/interface-id: HTTP 404"),
        "names the metadata path and its answer: {err}"
    );
    assert_readable(&err);

    imds.silence(me, true);
    let t = Instant::now();
    let err = match Vip::new(DriverKind::Aws, Some(vip_addr), "auto").await {
        Ok(_) => panic!("no driver without instance metadata"),
        Err(e) => format!("{e:#}"),
    };
    imds.silence(me, false);
    eprintln!(
        "metadata out of reach ({:.1}s): {err}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        err.contains("instance metadata /latest/meta-data/placement/region")
            && err.contains(&format!(
                "is the instance metadata service reachable at {}",
                imds.url()
            )),
        "names the metadata path and the endpoint: {err}"
    );
    assert_readable(&err);

    // 2. Failover through `heir-supervisor db node --vip-driver aws`.
    let aws = ["--vip-driver".to_string(), "aws".to_string()];
    pair.start_witnesses();
    pair.start_node_with("a", &aws, &[]);
    pair.start_node_with("b", &aws, &[]);
    wait_healthy(pair, "a", "b", Duration::from_secs(60)).await;
    let on = |want: Vec<String>| {
        let (admin, enis, vip) = (admin.clone(), enis.clone(), vip.clone());
        move || {
            let (admin, enis, vip, want) = (admin.clone(), enis.clone(), vip.clone(), want.clone());
            async move { holders(&admin, &enis, &vip).await == want }
        }
    };
    wait_for(
        "moto shows the floating IP on a's ENI (only)",
        Duration::from_secs(10),
        on(vec![eni_a.clone()]),
    )
    .await;
    assert!(
        pair.log("a")
            .lines()
            .any(|l| l.contains("event vip_acquired group=db member=a")
                && l.contains(&format!("aws {vip}/24 on {eni_a}"))),
        "a took the address through the aws driver"
    );

    let writer = Writer::start(&vip).await;
    wait_for("the writer commits", Duration::from_secs(10), || {
        let n = writer.count();
        async move { n >= 50 }
    })
    .await;
    let pid = pair.kill_postgres("a");
    let killed_at = Instant::now();
    eprintln!("killed postmaster {pid} of a");
    let b = pair.addr("b");
    let promoted = wait_for("b promoted", Duration::from_secs(10), || {
        let b = b.clone();
        async move { is_primary(&b).await == Some(true) }
    })
    .await;
    wait_for(
        "writes through the floating IP resume",
        Duration::from_secs(10),
        || {
            let r = writer.first_ack_after(killed_at).is_some();
            async move { r }
        },
    )
    .await;
    let gap = writer.first_ack_after(killed_at).unwrap() - killed_at;
    eprintln!(
        "b promoted {:.2}s after the kill; writes resumed after {:.2}s",
        promoted.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap <= Duration::from_secs(10),
        "writes resumed only after {gap:?}"
    );
    wait_for(
        "moto shows the floating IP on b's ENI",
        Duration::from_secs(10),
        || {
            let (admin, enis, vip, eni_b) =
                (admin.clone(), enis.clone(), vip.clone(), eni_b.clone());
            async move { holders(&admin, &enis, &vip).await.contains(&eni_b) }
        },
    )
    .await;
    eprintln!(
        "on b's ENI in moto (seen {:.2}s after the kill)",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(pair.holds_vip("b"), "b's eth0 carries the floating IP");
    wait_for("a drops the floating IP", Duration::from_secs(10), || {
        let held = pair.holds_vip("a");
        async move { !held }
    })
    .await;
    // moto leaves the address on a's ENI until a's supervisor unassigns it (EC2 moves it).
    wait_for(
        "a's ENI loses the floating IP (a released it)",
        Duration::from_secs(10),
        on(vec![eni_b.clone()]),
    )
    .await;
    let log_b = pair.log("b");
    assert!(
        log_b.contains("event db_promoted") && log_b.contains(&format!("aws {vip}/24 on {eni_b}")),
        "b promoted with the aws driver on its ENI"
    );
    assert!(
        !log_b.contains("promoted, but the floating IP"),
        "b's AssignPrivateIpAddresses succeeded"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = *writer.errors.lock().unwrap();
    let ids = writer.stop().await;
    let lost = missing(&b, &ids).await;
    eprintln!(
        "{} acknowledged commits, {errors} failed attempts, {lost} missing",
        ids.len()
    );
    assert_eq!(lost, 0, "acknowledged commits missing on the new primary");

    // Both supervisors found their ENI and their credentials in the metadata service.
    for node in ["a", "b"] {
        let ip: IpAddr = pair.addr(node).parse().unwrap();
        for path in [
            "GET /latest/meta-data/placement/region",
            "GET /latest/meta-data/network/interfaces/macs/",
            "GET /latest/meta-data/iam/security-credentials/heir-db",
        ] {
            assert!(
                imds.served(ip, path, 200) > 0,
                "{node} asked IMDS for {path}"
            );
        }
    }
    moto.enforce_iam(false).await;
    eprintln!("scenario took {:.1}s", t0.elapsed().as_secs_f64());
}
