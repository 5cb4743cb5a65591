//! `file`: directories, symlinks, hard links, removal, touch, and owner/group/mode of a path.
//!
//! ```yaml
//! - name: airflow home
//!   ansible.builtin.file:
//!     path: /opt/airflow
//!     state: directory
//!     owner: airflow
//!     mode: "0755"
//! - file: src=/opt/airflow/current dest=/opt/airflow/live state=link
//! - file: path=/tmp/stale state=absent
//! ```
//! Probe (one round trip): `stat` of the path (and of its target when following links), the
//! link target, inodes for hard links, whether `src` exists and, with `recurse`, whether anything
//! below the directory has other attributes. Plan (pure): a list of actions. Apply (one round
//! trip) unless in check mode (the contract's driver decides).
//!
//! `state: touch` reports changed on every run, as Ansible does; check mode predicts that too.
//! Deviations: symbolic modes (`u+x`) are not supported; `access_time`/`modification_time` are
//! accepted but only `touch` updates times (to now).

mod plan;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use crate::connection::quote;
use crate::modules::args::{de_opt_bool, de_opt_string};
use crate::modules::contract::{execute, NativeModule, Planned};
use crate::modules::copy::IgnoredAttrs;
use crate::modules::fileops::{self, Attrs, FileState, Kind};
use crate::modules::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dest: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    src: Option<String>,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(default, deserialize_with = "de_opt_bool")]
    recurse: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    follow: Option<bool>,
    #[serde(default)]
    access_time: Option<Value>,
    #[serde(default)]
    access_time_format: Option<Value>,
    #[serde(default)]
    modification_time: Option<Value>,
    #[serde(default)]
    modification_time_format: Option<Value>,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

pub use plan::{default_state, plan, Action, Observed, State, Want};

/// The apply script for `actions` on `path`.
pub fn apply_script(path: &str, actions: &[Action]) -> String {
    let q = quote(path);
    let mut parts = vec!["set -e".to_string()];
    for a in actions {
        parts.push(match a {
            Action::Remove => format!("rm -rf -- {q}"),
            Action::Mkdir => format!("mkdir -p -- {q}"),
            Action::Symlink { src, clear } => {
                let mut s = String::new();
                if *clear {
                    s.push_str(&format!(
                        "if [ -d {q} ] && [ ! -L {q} ]; then rmdir -- {q}; else rm -f -- {q}; fi; "
                    ));
                }
                s.push_str(&format!("ln -sfn -- {} {q}", quote(src)));
                s
            }
            Action::Hardlink { src } => format!("ln -f -- {} {q}", quote(src)),
            Action::Touch => format!("touch -- {q}"),
            Action::Attrs {
                changes,
                nofollow,
                recurse,
            } => fileops::attr_cmds(changes, &q, *nofollow, *recurse),
        });
    }
    parts.join("; ")
}

fn probe_script(path: &str, want: &Want) -> String {
    let q = quote(path);
    let mut s = fileops::stat_cmd(path, false);
    s.push_str("; printf F; ");
    s.push_str(&fileops::stat_cmd(path, true));
    s.push_str(&format!(
        "; if [ -L {q} ]; then echo \"L|$(readlink -- {q})\"; fi; if [ -e {q} ]; then echo \"I|$(stat -L -c %i -- {q})\"; fi"
    ));
    s.push_str(&format!(
        "; if [ -d {q} ] && [ -z \"$(ls -A -- {q} 2>/dev/null)\" ]; then echo 'EMPTY|1'; fi"
    ));
    if let Some(src) = &want.src {
        let qs = quote(src);
        // A relative symlink target is relative to the link's directory.
        let dir = quote(&fileops::parent_dir(path));
        s.push_str(&format!(
            "; if ( cd {dir} 2>/dev/null && [ -e {qs} ] ) || [ -e {qs} ]; then echo 'X|1'; fi; if [ -e {qs} ]; then echo \"J|$(stat -L -c %i -- {qs})\"; fi"
        ));
    }
    if want.recurse && want.state == State::Directory {
        let mut conds = Vec::new();
        if let Some(o) = &want.attrs.owner {
            conds.push(format!("! -user {}", quote(o)));
        }
        if let Some(g) = &want.attrs.group {
            conds.push(format!("! -group {}", quote(g)));
        }
        if let Some(m) = want.attrs.mode {
            conds.push(format!("! -perm {m:04o}"));
        }
        if !conds.is_empty() {
            s.push_str(&format!(
                "; if [ -d {q} ] && [ -n \"$(find {q} \\( {} \\) -print 2>/dev/null | head -n 1)\" ]; then echo 'DEEP|1'; fi",
                conds.join(" -o ")
            ));
        }
    }
    s
}

fn parse_probe(out: &str) -> Result<Observed, ModuleError> {
    let mut lines = out.lines();
    let bad = || ModuleError::Controller(format!("unexpected probe output: {out}"));
    let lstat = lines.next().and_then(fileops::parse_stat).ok_or_else(bad)?;
    let stat = lines
        .next()
        .and_then(|l| l.strip_prefix('F'))
        .and_then(fileops::parse_stat)
        .ok_or_else(bad)?;
    let mut o = Observed {
        lstat,
        stat,
        link_target: None,
        inode: None,
        src_inode: None,
        src_exists: false,
        dir_empty: false,
        deep_mismatch: false,
    };
    for l in lines {
        if let Some(v) = l.strip_prefix("L|") {
            o.link_target = Some(v.to_string());
        } else if let Some(v) = l.strip_prefix("I|") {
            o.inode = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("J|") {
            o.src_inode = v.trim().parse().ok();
        } else if l == "X|1" {
            o.src_exists = true;
        } else if l == "EMPTY|1" {
            o.dir_empty = true;
        } else if l == "DEEP|1" {
            o.deep_mismatch = true;
        }
    }
    Ok(o)
}

/// What the probe would see of a path as a package ships it (check mode's prediction); `stat`
/// follows a link only as far as the probe saw it.
fn from_package(p: &crate::modules::apt::PkgPath, dir_empty: bool, seen: Observed) -> Observed {
    let id = |name: &str| if name == "root" { 0 } else { u32::MAX };
    let st = FileState {
        kind: match p.kind {
            'd' => Kind::Dir,
            'l' => Kind::Link,
            '-' => Kind::File,
            _ => Kind::Other,
        },
        mode: p.mode,
        owner: p.owner.clone(),
        uid: id(&p.owner),
        group: p.group.clone(),
        gid: id(&p.group),
        size: 0,
    };
    Observed {
        stat: if st.kind == Kind::Link {
            seen.stat
        } else {
            st.clone()
        },
        lstat: st,
        link_target: p.target.clone(),
        dir_empty: p.kind == 'd' && dir_empty,
        ..seen
    }
}

fn describe(o: &Observed) -> String {
    match (&o.lstat.kind, &o.link_target) {
        (Kind::Link, Some(t)) => format!("state: link -> {t}\n"),
        (k, _) => format!("state: {}\n", k.name()),
    }
}

pub struct File;

#[async_trait]
impl Module for File {
    literal_params!("file");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["path", "dest", "name"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["file"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    fn path(&self) -> Result<&str, ModuleError> {
        let _ = (
            &self.access_time,
            &self.access_time_format,
            &self.modification_time,
            &self.modification_time_format,
        );
        self.path
            .as_deref()
            .or(self.dest.as_deref())
            .or(self.name.as_deref())
            .ok_or_else(|| ModuleError::Args("file: path is required".into()))
    }
    /// What is wanted; without a `state` the probe decides it ([`default_state`]), so `state`
    /// here is only the guess the probe script is built for.
    fn want(&self) -> Want {
        let recurse = self.recurse.unwrap_or(false);
        Want {
            state: match self.state {
                Some(s) => s,
                None if recurse => State::Directory,
                None => State::File,
            },
            src: self.src.clone(),
            attrs: self.attrs.clone(),
            recurse,
            force: self.force.unwrap_or(false),
            follow: self.follow.unwrap_or(true),
        }
    }
}

/// The planned change.
#[derive(Debug)]
pub enum Change {
    Run(Vec<Action>),
    /// A link's `src` is missing: check mode takes it as made by an earlier task of the run (as
    /// copy's missing directory) and predicts from that; the real run reports this failure.
    Fail(Outcome),
}

/// Pure: the actions and the result to report (a failure with no actions).
fn plan_outcome(path: &str, want: &Want, obs: &Observed, diff: bool) -> Planned<Vec<Action>> {
    if want.recurse && want.state != State::Directory {
        return Planned::nothing(Outcome::failed(
            "file: recurse option requires state to be 'directory'",
        ));
    }
    let actions = match plan(path, want, obs) {
        Ok(a) => a,
        Err(msg) => return Planned::nothing(Outcome::failed(msg).with("path", path)),
    };
    let changed = !actions.is_empty();
    let mut out = Outcome::changed(changed)
        .with("path", path)
        .with("state", want.state.name());
    if let Some(src) = &want.src {
        out = out.with("src", src.clone());
    }
    if let Some(o) = &want.attrs.owner {
        out = out.with("owner", o.clone());
    }
    if let Some(g) = &want.attrs.group {
        out = out.with("group", g.clone());
    }
    if let Some(m) = want.attrs.mode {
        out = out.with("mode", format!("{m:04o}"));
    }
    if diff && changed {
        let mut before = describe(obs);
        let mut after = match (&want.state, &want.src) {
            (State::Link, Some(s)) => format!("state: link -> {s}\n"),
            (State::Touch, _) if !obs.lstat.exists() => "state: file\n".into(),
            (State::Touch, _) => before.clone(),
            (s, _) => format!("state: {}\n", s.name()),
        };
        for a in &actions {
            if let Action::Attrs { changes, .. } = a {
                let (b, af) = fileops::attr_summary(&obs.stat, changes);
                before.push_str(&b);
                after.push_str(&af);
            }
        }
        out.diffs.push(FileDiff {
            path: path.to_string(),
            before,
            after,
        });
    }
    Planned::when(changed, actions, out)
}

#[async_trait]
impl NativeModule for File {
    type Params = Params;
    type Observed = Observed;
    type Plan = Change;
    const NAME: &'static str = "file";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let path = p.path()?;
        let r = ctx.sh(&probe_script(path, &p.want())).await?;
        let mut o = parse_probe(&r.stdout)?;
        if !o.lstat.exists() {
            // Check mode: a path a package this run installs would create, as it would be.
            if let Some(e) = crate::modules::apt::predicted_effects(ctx).await? {
                if let Some((pp, has_children)) = e.path(path) {
                    o = from_package(pp, !has_children, o);
                }
            }
        }
        Ok(o)
    }

    fn plan(&self, p: &Params, obs: &Observed, diff: bool) -> Result<Planned<Change>, ModuleError> {
        let path = p.path()?;
        let mut want = p.want();
        want.state = default_state(p.state, want.recurse, &obs.lstat);
        let planned = plan_outcome(path, &want, obs, diff);
        let lenient = if want.state == State::Link && !obs.src_exists {
            let assumed = Observed {
                src_exists: true,
                ..obs.clone()
            };
            Some(plan_outcome(path, &want, &assumed, diff))
        } else {
            None
        };
        Ok(match lenient {
            Some(check)
                if planned.outcome.failed
                    && (!check.outcome.failed || check.outcome.msg != planned.outcome.msg) =>
            {
                Planned::change(Change::Fail(planned.outcome), check.outcome)
            }
            _ => Planned {
                changes: planned.changes.map(Change::Run),
                outcome: planned.outcome,
            },
        })
    }

    async fn apply(
        &self,
        p: &Params,
        c: Change,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let actions = match c {
            Change::Fail(f) => return Ok(f),
            Change::Run(a) => a,
        };
        let path = p.path()?;
        let r = ctx.sh(&apply_script(path, &actions)).await?;
        if r.rc != 0 {
            let mut f = Outcome::failed(format!("file {path}: {}", r.stderr.trim()));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m: serde_json::Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        let r: Result<Params, _> = serde_json::from_value(Value::Object(m));
        assert!(r.is_ok(), "{r:?}");
        let r: Result<Params, _> = serde_json::from_value(json!({"path": "/x", "sate": "file"}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        use crate::modules::fileops::FileState;
        let st = |l: &str| fileops::parse_stat(l).unwrap();
        let dir = st("S|directory|755|root|0|root|0|4096");
        let seen = |l: FileState| Observed {
            lstat: l.clone(),
            stat: l,
            link_target: None,
            inode: None,
            src_inode: None,
            src_exists: false,
            dir_empty: false,
            deep_mismatch: false,
        };
        let p: Params =
            serde_json::from_value(json!({"path": "/opt/a", "state": "directory", "mode": "0755"}))
                .unwrap();
        let same = File.plan(&p, &seen(dir.clone()), true).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        let new = File.plan(&p, &seen(FileState::absent()), true).unwrap();
        assert!(matches!(&new.changes, Some(Change::Run(a)) if a[0] == Action::Mkdir));
        assert!(new.outcome.changed);
        assert_eq!(new.outcome.diffs[0].after, "state: directory\nmode: 0755\n");
        // A link to a src not there yet: check mode predicts it, the real run fails.
        let p: Params =
            serde_json::from_value(json!({"path": "/opt/live", "src": "/opt/v2", "state": "link"}))
                .unwrap();
        let link = File.plan(&p, &seen(FileState::absent()), false).unwrap();
        assert!(link.outcome.changed && !link.outcome.failed);
        assert!(
            matches!(&link.changes, Some(Change::Fail(f)) if f.msg.starts_with("src file does not exist"))
        );
        let bad = serde_json::from_value::<Params>(json!({"path": "/x", "state": "dir"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    #[tokio::test]
    async fn local_file_states() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let d = dir.path().join("a/b").display().to_string();
        let run = |args: Value, check: bool| {
            let args: Args = serde_json::from_value(args).unwrap();
            let ctx = testutil::ctx(&conn, &env, check);
            async move { File.run(&args, &ctx).await.unwrap() }
        };
        let o = run(
            json!({"path": d, "state": "directory", "mode": "0750"}),
            true,
        )
        .await;
        assert!(o.changed && !std::path::Path::new(&d).exists());
        let o = run(
            json!({"path": d, "state": "directory", "mode": "0750"}),
            false,
        )
        .await;
        assert!(o.changed && !o.failed, "{o:?}");
        let o = run(
            json!({"path": d, "state": "directory", "mode": "0750"}),
            false,
        )
        .await;
        assert!(!o.changed, "{o:?}");
        let l = dir.path().join("link").display().to_string();
        let o = run(json!({"path": l, "src": d, "state": "link"}), false).await;
        assert!(o.changed && !o.failed, "{o:?}");
        let o = run(json!({"path": l, "src": d, "state": "link"}), false).await;
        assert!(!o.changed && !o.failed, "{o:?}");
        let t = dir.path().join("t").display().to_string();
        let o = run(json!({"path": t, "state": "touch"}), false).await;
        assert!(o.changed && !o.failed, "{o:?}");
        let o = run(json!({"path": t, "state": "file"}), false).await;
        assert!(!o.changed && !o.failed, "{o:?}");
        let o = run(json!({"path": t, "state": "absent"}), false).await;
        assert!(o.changed && !o.failed, "{o:?}");
        let o = run(json!({"path": t, "state": "absent"}), false).await;
        assert!(!o.changed, "{o:?}");
        // A link to a src an earlier task would make: predicted in check mode, fails for real.
        let ghost = dir.path().join("ghost").display().to_string();
        let gl = dir.path().join("gl").display().to_string();
        let o = run(json!({"path": gl, "src": ghost, "state": "link"}), true).await;
        assert!(o.changed && !o.failed, "{o:?}");
        let o = run(json!({"path": gl, "src": ghost, "state": "link"}), false).await;
        assert!(
            o.failed && o.msg.starts_with("src file does not exist"),
            "{o:?}"
        );
    }
}
