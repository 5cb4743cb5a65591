//! systemd's and service's tests: parsing, the contract's plan on recorded probes.

use super::*;
use serde_json::json;

fn obs(active: &str, enabled: &str, rc: i32) -> Observed {
    Observed {
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: "running".into(),
        unit_file_state: enabled.into(),
        is_enabled_out: enabled.into(),
        is_enabled_rc: rc,
    }
}
fn want(state: Option<State>, enabled: Option<bool>) -> Want {
    Want {
        state,
        enabled,
        masked: None,
    }
}

#[test]
fn every_arg_is_accepted() {
    let m: Map<String, Value> = Params::accepted()
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect();
    assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
    let m = crate::modules::testutil::every_arg::<ServiceParams>();
    assert!(serde_json::from_value::<ServiceParams>(Value::Object(m)).is_ok());
    let r = serde_json::from_value::<Params>(json!({"name": "x", "enable": true}));
    assert!(r.unwrap_err().to_string().contains("unknown field"));
}

#[test]
fn started_and_stopped_are_idempotent() {
    let s = Some(State::Started);
    assert_eq!(
        plan("u", &want(s, None), &obs("inactive", "enabled", 0)).unwrap(),
        vec!["start"]
    );
    assert!(plan("u", &want(s, None), &obs("active", "enabled", 0))
        .unwrap()
        .is_empty());
    assert!(plan("u", &want(s, None), &obs("activating", "enabled", 0))
        .unwrap()
        .is_empty());
    let s = Some(State::Stopped);
    assert_eq!(
        plan("u", &want(s, None), &obs("active", "enabled", 0)).unwrap(),
        vec!["stop"]
    );
    assert!(plan("u", &want(s, None), &obs("inactive", "enabled", 0))
        .unwrap()
        .is_empty());
    assert!(plan("u", &want(s, None), &obs("failed", "enabled", 0))
        .unwrap()
        .is_empty());
}

#[test]
fn restarted_and_reloaded_always_act() {
    let o = obs("active", "enabled", 0);
    assert_eq!(
        plan("u", &want(Some(State::Restarted), None), &o).unwrap(),
        vec!["restart"]
    );
    assert_eq!(
        plan("u", &want(Some(State::Reloaded), None), &o).unwrap(),
        vec!["reload"]
    );
    let o = obs("inactive", "enabled", 0);
    assert_eq!(
        plan("u", &want(Some(State::Reloaded), None), &o).unwrap(),
        vec!["start"]
    );
}

#[test]
fn enabled_follows_is_enabled() {
    let w = want(None, Some(true));
    assert!(plan("u", &w, &obs("active", "enabled", 0))
        .unwrap()
        .is_empty());
    assert!(plan("u", &w, &obs("active", "static", 0))
        .unwrap()
        .is_empty());
    assert_eq!(
        plan("u", &w, &obs("active", "disabled", 1)).unwrap(),
        vec!["enable"]
    );
    assert_eq!(
        plan("u", &w, &obs("active", "indirect", 0)).unwrap(),
        vec!["enable"]
    );
    // Enabled until the next boot only: made permanent, as Ansible does.
    assert_eq!(
        plan("u", &w, &obs("active", "enabled-runtime", 0)).unwrap(),
        vec!["enable"]
    );
    let w = want(Some(State::Started), Some(false));
    assert_eq!(
        plan("u", &w, &obs("inactive", "enabled", 0)).unwrap(),
        vec!["disable", "start"]
    );
}

#[test]
fn masking_and_missing_units() {
    let w = Want {
        state: None,
        enabled: None,
        masked: Some(true),
    };
    assert_eq!(
        plan("u", &w, &obs("inactive", "enabled", 0)).unwrap(),
        vec!["mask"]
    );
    assert!(plan("u", &w, &obs("inactive", "masked", 1))
        .unwrap()
        .is_empty());
    let mut o = obs("inactive", "", 1);
    o.load_state = "not-found".into();
    assert!(plan("nope", &want(Some(State::Started), None), &o).is_err());
}

#[test]
fn contract_plan_on_recorded_probe() {
    let p: Params = serde_json::from_value(
        json!({"name": "airflow-scheduler", "state": "started", "enabled": true}),
    )
    .unwrap();
    let up = Seen::Unit(obs("active", "enabled", 0));
    let pl = Systemd.plan(&p, &up, false).unwrap();
    assert!(pl.changes.is_none() && !pl.outcome.changed);
    assert_eq!(pl.outcome.data["state"], json!("started"));
    let down = Seen::Unit(obs("inactive", "disabled", 1));
    let pl = Systemd.plan(&p, &down, false).unwrap();
    assert!(matches!(pl.changes, Some(Action::Run(ref v)) if *v == ["enable", "start"]));
    assert!(pl.outcome.changed);
    // Not installed yet: check mode predicts a change, a real run fails in apply.
    let mut gone = obs("inactive", "", 1);
    gone.load_state = "not-found".into();
    let pl = Systemd.plan(&p, &Seen::Unit(gone), false).unwrap();
    assert!(matches!(pl.changes, Some(Action::Missing(_))) && pl.outcome.changed);
    let sp: ServiceParams =
        serde_json::from_value(json!({"name": "nginx", "state": "reloaded"})).unwrap();
    let pl = Service
        .plan(&sp, &Seen::Unit(obs("active", "enabled", 0)), false)
        .unwrap();
    assert!(matches!(pl.changes, Some(Action::Run(ref v)) if *v == ["reload"]));
    let bad = serde_json::from_value::<Params>(json!({"name": "x", "state": "running"}));
    assert!(bad.unwrap_err().to_string().contains("unknown variant"));
}

#[test]
fn parses_probe_output() {
    let o = parse_probe("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nENRC|0\nEN|enabled\n");
    assert!(o.running() && o.enabled() && o.found() && !o.masked());
}
