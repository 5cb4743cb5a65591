//! One run of an Ansible module on the target: the payload on the interpreter's stdin (as
//! ansible-playbook's pipelining does), its JSON result read back as an [`Outcome`].

use serde_json::{Map, Value};

use super::{fallback, BuildOpts, Resolved};
use crate::connection::quote;
use crate::modules::{Args, FileDiff, ModuleError, Outcome, TaskCtx};

/// Ansible's interpreter discovery settles on this on Debian and most current distributions.
const DEFAULT_PYTHON: &str = "/usr/bin/python3";

pub async fn run(
    module: &Resolved,
    args: &Args,
    ctx: &TaskCtx<'_>,
    no_log: bool,
) -> Result<Outcome, ModuleError> {
    let fb = fallback().ok_or_else(|| ModuleError::Controller("no Ansible installation".into()))?;
    let python = ctx
        .env
        .var("ansible_python_interpreter")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| DEFAULT_PYTHON.to_string());
    let (m, a) = (module.clone(), Value::Object(args.clone()));
    let opts = (python.clone(), ctx.check, ctx.diff, no_log);
    let payload = tokio::task::spawn_blocking(move || {
        fb.build(
            &m,
            a,
            BuildOpts {
                python: &opts.0,
                check: opts.1,
                diff: opts.2,
                no_log: opts.3,
            },
        )
    })
    .await
    .map_err(|e| ModuleError::Controller(format!("building {}: {e}", module.fqcn)))?
    .map_err(ModuleError::Controller)?;
    let q = quote(&python);
    let script = format!(
        "if [ ! -x {q} ]; then echo 'hfplay: no {q} on this host' >&2; exit 127; fi\nexec {q}"
    );
    let r = ctx.sh_stdin(&script, &payload).await?;
    Ok(outcome(&module.fqcn, r.rc, &r.stdout, &r.stderr))
}

/// Ansible's reading of a module's output: the JSON document among the lines it printed (a
/// module may print noise before or after), else a failure with what it wrote.
pub fn outcome(fqcn: &str, rc: i32, stdout: &str, stderr: &str) -> Outcome {
    let Some(mut m) = json_document(stdout) else {
        let mut o = Outcome::failed(format!(
            "{fqcn}: MODULE FAILURE (rc {rc}, no JSON result). See stdout/stderr for the exact error"
        ));
        o.data.insert("rc".into(), rc.into());
        o.data.insert("module_stdout".into(), stdout.into());
        o.data.insert("module_stderr".into(), stderr.into());
        return o;
    };
    let flag = |m: &mut Map<String, Value>, k: &str| {
        m.remove(k)
            .is_some_and(|v| crate::words::to_bool(&v).unwrap_or(false))
    };
    let failed = flag(&mut m, "failed") || (rc != 0 && !m.contains_key("rc"));
    let changed = flag(&mut m, "changed");
    let skipped = flag(&mut m, "skipped");
    let msg = match m.remove("msg") {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let facts = match m.remove("ansible_facts") {
        Some(Value::Object(f)) => Some(f),
        _ => None,
    };
    let diffs = match m.remove("diff") {
        Some(Value::Array(a)) => a.iter().filter_map(diff).collect(),
        Some(d) => diff(&d).into_iter().collect(),
        None => vec![],
    };
    Outcome {
        changed,
        failed,
        skipped,
        msg,
        diffs,
        data: m,
        facts,
    }
}

fn diff(d: &Value) -> Option<FileDiff> {
    let text = |k: &str| match &d[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => serde_json::to_string_pretty(v).unwrap_or_default(),
    };
    let path = d["after_header"]
        .as_str()
        .or(d["before_header"].as_str())
        .unwrap_or("")
        .to_string();
    (d.get("before").is_some() || d.get("after").is_some()).then(|| FileDiff {
        path,
        before: text("before"),
        after: text("after"),
    })
}

/// The first line that starts a JSON object through the last that ends one, as Ansible's
/// `_filter_non_json_lines`.
fn json_document(stdout: &str) -> Option<Map<String, Value>> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines.iter().position(|l| l.trim_start().starts_with('{'))?;
    let end = lines.iter().rposition(|l| l.trim_end().ends_with('}'))?;
    if end < start {
        return None;
    }
    match serde_json::from_str(&lines[start..=end].join("\n")) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_read_past_noise_with_facts_and_diff() {
        let out = "warning: noise\n{\"changed\": true, \"msg\": \"done\", \"user\": \"app\", \
                   \"ansible_facts\": {\"x\": 1}, \"diff\": {\"before\": \"a\\n\", \"after\": \"b\\n\", \
                   \"after_header\": \"/etc/x\"}, \"invocation\": {\"module_args\": {}}}\ntrailer\n";
        let o = outcome("ns.c.m", 0, out, "");
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(o.msg, "done");
        assert_eq!(o.data["user"], "app");
        assert_eq!(o.facts.as_ref().map(|f| f["x"].clone()), Some(1.into()));
        assert_eq!(o.diffs[0].path, "/etc/x");
        assert_eq!(
            (o.diffs[0].before.as_str(), o.diffs[0].after.as_str()),
            ("a\n", "b\n")
        );
    }

    #[test]
    fn no_json_is_a_module_failure_keeping_the_output() {
        let o = outcome(
            "ns.c.m",
            1,
            "",
            "Traceback: ImportError: No module named MySQLdb\n",
        );
        assert!(o.failed && !o.changed);
        assert!(o.msg.contains("MODULE FAILURE"), "{}", o.msg);
        assert!(o.data["module_stderr"]
            .as_str()
            .unwrap_or("")
            .contains("MySQLdb"));
    }

    #[test]
    fn a_failure_reported_by_the_module_is_not_changed() {
        let o = outcome(
            "ns.c.m",
            1,
            "{\"failed\": true, \"msg\": \"no such db\"}\n",
            "",
        );
        assert!(o.failed && !o.changed);
        assert_eq!(o.msg, "no such db");
    }
}
