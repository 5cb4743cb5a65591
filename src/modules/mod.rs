//! Native modules. Each module lives in its own file with its `Params` (serde,
//! `deny_unknown_fields`, choices such as `state` as serde enums). `#[derive(ModuleArgs)]` reads
//! the accepted and required argument names from the same struct: the load-time check of
//! unknown arguments uses them, so no module keeps a list of names beside its type.
//!
//! Modules implement [`contract::NativeModule`]: a probe of the host's current state (one round
//! trip, no changes), a pure plan from (params, observed) to the changes and the predicted result,
//! and an apply step. Their [`Module::run`] is [`contract::execute`], the one place that reads
//! `ctx.check`: it applies only when the plan has changes and this is not check mode, so
//! `--check` reports the plan's prediction, refined where a module needs a read-only dry run by
//! [`contract::NativeModule::simulate`] (called only in check mode). On the contract: group,
//! sysctl, systemd/service, user, mount, apt (check mode simulates with `apt-get -s`), pip,
//! get_url (check mode with `force` downloads to compare), unarchive, package (apt's run on apt
//! hosts, so its check mode and diff are apt's), command/shell (their plan
//! cannot predict: check mode skips them unless `creates`/`removes` decide), stat, wait_for,
//! setup and service_facts (read-only: probe only, an empty plan), apt_repository, timezone,
//! locale_gen, apt_key and deb822_repository (their probes fetch the key, read-only, so check
//! mode predicts exactly), blockinfile and lineinfile (fileops'
//! probe_text/plan_text/apply_text), copy and template (copy/put.rs' probe_put/plan_put/apply_put;
//! a missing destination directory is planned as a failure check mode predicts as changed), file
//! (likewise a link's missing `src`). No module reads `ctx.check` itself.
//!
//! Modules reach the host only through [`TaskCtx::sh`] (a POSIX shell script per round trip) and
//! the controller only through [`TaskEnv`] (templates, file lookup).

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::connection::{Become, ConnError, ExecResult, HostConn};

/// `check_literal` for a module whose arguments deserialize straight into its `Params`.
macro_rules! literal_params {
    ($name:literal) => {
        fn check_literal(
            &self,
            args: &$crate::modules::Args,
        ) -> Result<(), $crate::modules::ModuleError> {
            $crate::modules::parse::<Params>($name, args).map(|_| ())
        }
    };
}

pub mod apt;
pub mod apt_key;
pub mod apt_repository;
pub mod args;
pub mod aws;
pub mod blockinfile;
pub mod command;
pub mod contract;
pub mod copy;
pub mod deb822_repository;
pub mod file;
pub mod fileops;
pub mod get_url;
pub mod group;
pub mod lineinfile;
pub mod locale_gen;
pub mod mount;
pub mod package;
pub mod pip;
pub mod service_facts;
pub mod setup;
pub mod stat;
pub mod sysctl;
pub mod systemd;
pub mod template;
pub mod timezone;
pub mod unarchive;
pub mod user;
pub mod wait_for;

#[cfg(test)]
mod live;
#[cfg(test)]
pub mod testutil;

pub use args::{Args, ModuleArgs};

/// A diff of one file, shown with `--diff`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileDiff {
    pub path: String,
    pub before: String,
    pub after: String,
}

/// What a module reports: Ansible's result dictionary, typed where the runner needs it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changed: bool,
    pub failed: bool,
    pub skipped: bool,
    pub msg: String,
    pub diffs: Vec<FileDiff>,
    /// Extra fields visible through `register` (rc, stdout, stat, ...).
    pub data: Map<String, Value>,
    /// Facts to add to the host (setup).
    pub facts: Option<Map<String, Value>>,
}

impl Outcome {
    pub fn ok() -> Self {
        Self::default()
    }
    pub fn changed(changed: bool) -> Self {
        Outcome {
            changed,
            ..Default::default()
        }
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        Outcome {
            failed: true,
            msg: msg.into(),
            ..Default::default()
        }
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }
    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = msg.into();
        self
    }
}

#[derive(Debug, Error)]
pub enum ModuleError {
    /// A bad argument: reported before the host is touched where possible.
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Controller-side failure (template error, missing src file, ...).
    #[error("{0}")]
    Controller(String),
}

/// Where a module looks for a controller-side file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `files/` of the role, then the playbook dir.
    Files,
    /// `templates/` of the role, then the playbook dir.
    Templates,
}

/// The controller side of a task: templating with the task's variables and file lookup.
pub trait TaskEnv: Send + Sync {
    /// Renders `text` as a template with the host's variables at this task.
    fn render(&self, text: &str, origin: &str) -> Result<String, String>;
    /// Renders `text` with `extra` variables on top of the host's (they win).
    fn render_with(
        &self,
        text: &str,
        origin: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String>;
    /// Resolves a relative `src` the way Ansible does (role dirs first, then playbook dir).
    fn find_file(&self, kind: FileKind, name: &str) -> Option<PathBuf>;
    /// A variable of the host at this task, templated (`None`: undefined or not templatable);
    /// `package` reads `ansible_package_use` and the `pkg_mgr` fact through it.
    fn var(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// Everything a module may use while it runs on one host.
pub struct TaskCtx<'a> {
    pub host: &'a str,
    pub check: bool,
    pub diff: bool,
    pub conn: &'a HostConn,
    pub become_: Option<Become>,
    pub environment: BTreeMap<String, String>,
    pub env: &'a dyn TaskEnv,
}

impl TaskCtx<'_> {
    /// Runs a shell script on the host (one round trip) with the task's become and environment.
    pub async fn sh(&self, script: &str) -> Result<ExecResult, ModuleError> {
        Ok(self
            .conn
            .run(script, None, self.become_.as_ref(), &self.environment)
            .await?)
    }
    /// Same, feeding `stdin` (file contents are uploaded this way).
    pub async fn sh_stdin(&self, script: &str, stdin: &[u8]) -> Result<ExecResult, ModuleError> {
        Ok(self
            .conn
            .run(
                script,
                Some(stdin),
                self.become_.as_ref(),
                &self.environment,
            )
            .await?)
    }
}

#[async_trait]
pub trait Module: Send + Sync {
    /// Short names; each also answers as `ansible.builtin.<name>` and `ansible.legacy.<name>`.
    fn names(&self) -> &'static [&'static str];
    /// The collections whose fully-qualified names reach this module.
    fn collections(&self) -> &'static [&'static str] {
        BUILTIN_COLLECTIONS
    }
    /// Every accepted argument name (incl. aliases): unknown ones fail before anything runs.
    fn arg_names(&self) -> &'static [&'static str];
    /// `command: echo hi` style: the string goes to `_raw_params` instead of `k=v` parsing.
    fn free_form(&self) -> bool {
        false
    }
    /// Groups of argument names of which one must be given (a name and its aliases).
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[]
    }
    /// Checks the arguments against the typed parameters; called when a task loads if none of
    /// its argument values is templated (so a type error fails before any host changes).
    fn check_literal(&self, _args: &Args) -> Result<(), ModuleError> {
        Ok(())
    }
    /// Runs with templated arguments.
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError>;
}

/// What can be known of a task's arguments when it loads: required ones present, and, where
/// nothing is templated, values of the types the module takes.
pub fn check_at_load(m: &dyn Module, args: &Args) -> Result<(), String> {
    if let Some(e) = missing_required(m.names()[0], m.required(), args) {
        return Err(e);
    }
    fn templated(v: &Value) -> bool {
        match v {
            Value::String(s) => crate::template::is_template(s),
            Value::Array(a) => a.iter().any(templated),
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| crate::template::is_template(k) || templated(v)),
            _ => false,
        }
    }
    if !args.values().any(templated) {
        m.check_literal(args).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// All native modules.
pub fn registry() -> Vec<Box<dyn Module>> {
    let v: Vec<Box<dyn Module>> = vec![
        Box::new(apt::Apt),
        Box::new(apt_key::AptKey),
        Box::new(apt_repository::AptRepository),
        Box::new(aws::efs::Efs),
        Box::new(aws::eni::Eni),
        Box::new(aws::iam_policy::IamPolicy),
        Box::new(aws::iam_role::IamRole),
        Box::new(aws::instance::Instance),
        Box::new(aws::security_group::SecurityGroup),
        Box::new(aws::vpc_net::VpcNet),
        Box::new(aws::vpc_subnet::VpcSubnet),
        Box::new(blockinfile::BlockInFile),
        Box::new(command::Command),
        Box::new(command::Shell),
        Box::new(copy::Copy),
        Box::new(deb822_repository::Deb822Repository),
        Box::new(file::File),
        Box::new(get_url::GetUrl),
        Box::new(group::Group),
        Box::new(lineinfile::LineInFile),
        Box::new(locale_gen::LocaleGen),
        Box::new(mount::Mount),
        Box::new(package::Package),
        Box::new(pip::Pip),
        Box::new(service_facts::ServiceFacts),
        Box::new(setup::Setup),
        Box::new(stat::Stat),
        Box::new(sysctl::Sysctl),
        Box::new(systemd::Service),
        Box::new(systemd::Systemd),
        Box::new(template::Template),
        Box::new(timezone::Timezone),
        Box::new(unarchive::Unarchive),
        Box::new(user::User),
        Box::new(wait_for::WaitFor),
    ];

    v
}

/// The collections the built-in modules answer in (`ansible.posix.mount`,
/// `community.general.ini_file`-style names of the same modules).
pub const BUILTIN_COLLECTIONS: &[&str] = &[
    "ansible.builtin",
    "ansible.legacy",
    "ansible.posix",
    "community.general",
];

/// Finds a module by short or fully-qualified name; a qualified name must name the module's own
/// collection (`amazon.aws.ec2_instance`, not `ansible.builtin.ec2_instance`).
pub fn lookup<'a>(reg: &'a [Box<dyn Module>], name: &str) -> Option<&'a dyn Module> {
    let short = short_name(name);
    let collection = name
        .strip_suffix(short)
        .and_then(|c| c.strip_suffix('.'))
        .filter(|c| !c.is_empty());
    reg.iter()
        .find(|m| {
            m.names().contains(&short) && collection.is_none_or(|c| m.collections().contains(&c))
        })
        .map(|m| m.as_ref())
}

/// `ansible.builtin.copy` → `copy`.
pub fn short_name(name: &str) -> &str {
    for prefix in [
        "ansible.builtin.",
        "ansible.legacy.",
        "ansible.posix.",
        "community.general.",
        "amazon.aws.",
        "community.aws.",
    ] {
        if let Some(s) = name.strip_prefix(prefix) {
            return s;
        }
    }
    name
}

/// The message for the first group of `required` names none of which `args` gives (null counts
/// as not given, as in Ansible).
pub fn missing_required(module: &str, required: &[&[&str]], args: &Args) -> Option<String> {
    let group = required.iter().find(|group| {
        !group
            .iter()
            .any(|k| args.get(*k).is_some_and(|v| !v.is_null()))
    })?;
    Some(match group {
        [one] => format!("missing required argument '{one}' for module '{module}'"),
        _ => format!(
            "missing required argument '{}' (or an alias: {}) for module '{module}'",
            group[0],
            group[1..].join(", ")
        ),
    })
}

/// Deserializes module arguments into a typed `Params`, with a message naming the module.
/// Required fields are checked first, so a missing one reads as at load time rather than as
/// serde's "missing field".
pub fn parse<P: DeserializeOwned + ModuleArgs>(
    module: &str,
    args: &Args,
) -> Result<P, ModuleError> {
    if let Some(e) = missing_required(module, P::required(), args) {
        return Err(ModuleError::Args(e));
    }
    serde_json::from_value(Value::Object(args.clone()))
        .map_err(|e| ModuleError::Args(format!("{module}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_names_and_args_are_unique() {
        let reg = crate::modules::registry();
        let mut names = std::collections::BTreeSet::new();
        for m in &reg {
            for n in m.names() {
                assert!(names.insert(*n), "module name {n} registered twice");
                for c in m.collections() {
                    assert!(crate::modules::lookup(&reg, &format!("{c}.{n}")).is_some());
                }
            }
            let mut args = std::collections::BTreeSet::new();
            for a in m.arg_names() {
                assert!(
                    args.insert(*a),
                    "{:?}: argument {a} listed twice",
                    m.names()
                );
            }
        }
        for n in [
            "copy",
            "template",
            "file",
            "lineinfile",
            "blockinfile",
            "stat",
            "apt",
            "systemd",
            "systemd_service",
            "service",
            "user",
            "group",
            "get_url",
            "unarchive",
            "pip",
            "mount",
            "package",
            "sysctl",
            "wait_for",
            "setup",
            "service_facts",
            "apt_repository",
            "timezone",
            "locale_gen",
            "apt_key",
            "deb822_repository",
        ] {
            assert!(names.contains(n), "{n} is not registered");
        }
    }

    #[test]
    fn qualified_names_must_name_the_modules_collection() {
        use crate::modules::{lookup, registry};
        let reg = registry();
        assert!(lookup(&reg, "amazon.aws.ec2_instance").is_some());
        assert!(lookup(&reg, "ec2_instance").is_some());
        assert!(lookup(&reg, "community.aws.efs").is_some());
        assert!(lookup(&reg, "ansible.builtin.ec2_instance").is_none());
        assert!(lookup(&reg, "amazon.aws.copy").is_none());
        assert!(lookup(&reg, "ansible.posix.mount").is_some());
    }

    /// A required field missing (or null) at run time reads as it does at load time, not as
    /// serde's "missing field": both come from the type's derived required names.
    #[test]
    fn a_missing_required_argument_reads_as_at_load() {
        use crate::modules::{check_at_load, group, lookup, parse, registry, template, Args};
        let reg = registry();
        let args: Args =
            serde_json::from_value(serde_json::json!({"gid": 5, "name": null})).unwrap();
        let e = parse::<group::Params>("group", &args)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing required argument 'name' for module 'group'");
        assert_eq!(check_at_load(lookup(&reg, "group").unwrap(), &args), Err(e));
        let args: Args = serde_json::from_value(serde_json::json!({"src": "a.j2"})).unwrap();
        let e = parse::<template::Params>("template", &args)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing required argument 'dest' for module 'template'");
    }
}
