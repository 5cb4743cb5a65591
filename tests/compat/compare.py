#!/usr/bin/env python3
"""Checks of the compatibility suite for one role (tests/compat/run.sh), from the JSON documents
of its runs: hfplay `--json` and ansible-playbook with the ansible.posix.json callback.

usage: compare.py ROLE DIR
Also writes DIR/status-diff.txt: every task whose status differs between the real runs.
DIR holds, per tool T (hf, an) and run R (check-fresh, real, rerun, check-conv): T-R.json
(stdout), T-R.err (stderr), T-R.rc (exit code). Prints one line per check and the differences;
exits 1 when a check of hfplay fails.
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

RUNS = ("check-fresh", "real", "rerun", "check-conv")


def norm(name):
    """A task's name as both tools show it: whitespace collapsed."""
    return re.sub(r"\s+", " ", str(name)).strip()


def status_hf(res):
    """hfplay: one result dict, or the list of a loop's item results."""
    items = res if isinstance(res, list) else [res]
    sts = [i.get("status", "ok") for i in items if isinstance(i, dict)]
    failed = [i for i in items if isinstance(i, dict) and i.get("status") in ("failed", "unreachable")
              and not i.get("ignored")]
    if failed:
        return ("unreachable" if failed[0].get("status") == "unreachable" else "failed"), failed[0]
    if "changed" in sts:
        return "changed", None
    if sts and all(s == "skipped" for s in sts):
        return "skipped", None
    return "ok", None


def status_an(res):
    if res.get("unreachable"):
        return "unreachable", res
    if res.get("failed"):
        return "failed", res
    if res.get("changed"):
        return "changed", None
    if res.get("skipped"):
        return "skipped", None
    return "ok", None


def msg_of(res):
    if not res:
        return ""
    m = res.get("msg") or ""
    if not m and isinstance(res.get("results"), list):
        for r in res["results"]:
            if isinstance(r, dict) and r.get("failed"):
                m = r.get("msg") or r.get("stderr") or ""
                break
    if not m:
        m = res.get("stderr") or res.get("module_stderr") or ""
    m = str(m).strip()
    return m if len(m) <= 600 else m[:600] + " ..."


class Run:
    """One run of one tool: exit code, its task rows (name, status, failure) and stats."""

    def __init__(self, d, tool, run):
        self.tool, self.run = tool, run
        base = Path(d) / f"{tool}-{run}"
        self.rc = int((base.with_suffix(".rc")).read_text().strip() or 99) if base.with_suffix(".rc").exists() else None
        self.err = base.with_suffix(".err").read_text(errors="replace") if base.with_suffix(".err").exists() else ""
        self.rows = []          # (name, status, failure-result)
        self.stats = {}
        self.doc_ok = False
        p = base.with_suffix(".json")
        text = p.read_text(errors="replace") if p.exists() else ""
        try:
            doc = json.loads(text[text.index("{"):]) if "{" in text else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return
        self.doc_ok = True
        self.stats = doc.get("stats") or {}
        for play in doc.get("plays", []):
            for t in play.get("tasks", []):
                if tool == "hf":
                    name = t.get("task", "")
                    hosts = t.get("hosts", {})
                else:
                    name = t.get("task", {}).get("name", "")
                    hosts = t.get("hosts", {})
                for _host, res in hosts.items():
                    st, fail = (status_hf if tool == "hf" else status_an)(res)
                    self.rows.append((norm(name), st, fail))

    def ran(self):
        return self.rc is not None

    def changed(self):
        return Counter(n for n, s, _ in self.rows if s == "changed")

    def n_changed(self):
        # the recap's count (a loop counts once), else the rows'
        vals = [v.get("changed", 0) for v in self.stats.values() if isinstance(v, dict)]
        return sum(vals) if vals else sum(self.changed().values())

    def failures(self):
        return [(n, msg_of(f)) for n, s, f in self.rows if s in ("failed", "unreachable")]

    def outcome(self):
        """rc and, when it failed, where and why (or the error text when no result came)."""
        if not self.ran():
            return "not run"
        s = f"rc={self.rc}"
        fs = self.failures()
        if fs:
            s += "; failed at " + "; ".join(f"'{n}': {m}" for n, m in fs[:3])
        elif self.rc != 0:
            tail = " | ".join(l for l in self.err.strip().splitlines()
                              if l.strip() and "CryptographyDeprecationWarning" not in l
                              and "from cryptography" not in l)[-800:]
            s += f"; {tail or '(no output)'}"
        return s

    def converged(self):
        return self.rc == 0 and not self.failures()

    def failure_of(self, name):
        return next((f for n, s, f in self.rows if n == name and s == "failed"), None)

    def real_stop(self):
        """The task this run stopped at when its only failures are of one task that ran for
        real in check mode (hfplay marks those rows `check_mode: false`), else None."""
        fs = [(n, f) for n, s, f in self.rows if s in ("failed", "unreachable")]
        if self.tool != "hf" or not fs or len({n for n, _ in fs}) != 1:
            return None
        n, f = fs[0]
        return n if isinstance(f, dict) and f.get("check_mode") is False else None

    def changed_before(self, name):
        """The changed tasks before the first row of task `name` (all of them without one)."""
        c = Counter()
        for n, s, _ in self.rows:
            if n == name:
                break
            if s == "changed":
                c[n] += 1
        return c


def diff_changed(a, b, an_name, bn_name):
    """Tasks changed on one side only (multisets), as text lines."""
    out = []
    for n in sorted(set(a) | set(b)):
        if a[n] != b[n]:
            if a[n] > b[n]:
                out.append(f"changed by {an_name} only: '{n}'" + (f" (x{a[n] - b[n]})" if a[n] - b[n] > 1 else ""))
            else:
                out.append(f"changed by {bn_name} only: '{n}'" + (f" (x{b[n] - a[n]})" if b[n] - a[n] > 1 else ""))
    return out


def status_of(run, name):
    return ",".join(s for n, s, _ in run.rows if n == name) or "not run"


def main():
    role, d = sys.argv[1], sys.argv[2]
    R = {(t, r): Run(d, t, r) for t in ("hf", "an") for r in RUNS}
    lines, fails = [], 0

    def check(label, ok, detail, ref=""):
        nonlocal fails
        if not ok:
            fails += 1
        lines.append(f"  {label:<28} {'PASS' if ok else 'FAIL'}  {detail}" + (f"   [ansible: {ref}]" if ref else ""))

    hf, an = R[("hf", "real")], R[("an", "real")]
    check("converge", hf.converged(), hf.outcome(), an.outcome())

    hc, ac = hf.changed(), an.changed()
    d = diff_changed(hc, ac, "hfplay", "ansible")
    noref = "" if an.converged() else "; no reference: ansible-playbook did not converge"
    check("changed set = ansible's", hf.doc_ok and an.converged() and not d,
          f"{sum(hc.values())} changed tasks (hfplay), {sum(ac.values())} (ansible){noref}")
    for x in d:
        n = x.split("'", 1)[1].rsplit("'", 1)[0]
        lines.append(f"      {x}   [hfplay: {status_of(hf, n)}; ansible: {status_of(an, n)}]")

    for run, label in (("rerun", "re-run changed=0"), ("check-conv", "--check converged changed=0")):
        h, a = R[("hf", run)], R[("an", run)]
        ok = h.converged() and h.doc_ok and h.n_changed() == 0
        check(label, ok, f"changed={h.n_changed()} {h.outcome()}", f"changed={a.n_changed()} {a.outcome()}")
        for n, c in sorted(h.changed().items()):
            lines.append(f"      changed by hfplay: '{n}'" + (f" (x{c})" if c > 1 else "") + f"   [ansible: {status_of(a, n)}]")

    h, a = R[("hf", "check-fresh")], R[("an", "check-fresh")]
    # A check that stops at a task that ran for real (`check_mode: false`, reading what only
    # the real run's earlier changes create, e.g. the version of a package the check did not
    # install) is held to the real run up to that task: no tool can predict past it.
    stop = h.real_stop()
    real_part = hf.changed_before(stop) if stop else hc
    upto = f", up to '{stop}' (check_mode: false, ran for real: {msg_of(h.failure_of(stop))[:160]})" if stop else ""
    dh = diff_changed(h.changed(), real_part, "--check", "the real run")
    da = diff_changed(a.changed(), ac, "--check", "the real run")
    check("--check fresh = real run", (h.converged() or stop is not None) and h.doc_ok and not dh,
          f"{sum(h.changed().values())} changed{upto}, {h.outcome()}",
          f"{sum(a.changed().values())} changed, {'same set as its real run' if not da else str(len(da)) + ' differences'}, {a.outcome()}")
    for x in dh:
        lines.append(f"      hfplay: {x}")
    left = Path(sys.argv[2]) / "hf-check-fresh.leftovers"
    left = left.read_text().split() if left.exists() else ["(not recorded)"]
    check("--check fresh leaves nothing", not left,
          "no scratch directory, package lists or update stamp on the host afterwards" if not left
          else "left on the host: " + " ".join(left[:5]))
    for x in diff_changed(h.changed(), a.changed(), "hfplay --check", "ansible --check"):
        n = x.split("'", 1)[1].rsplit("'", 1)[0]
        lines.append(f"      vs ansible: {x}   [hfplay: {status_of(h, n)}; ansible: {status_of(a, n)}]")

    print(f"== {role}")
    print("\n".join(lines))
    (Path(sys.argv[2]) / "status-diff.txt").write_text(status_diff(hf, an))
    return 1 if fails else 0


def status_diff(hf, an):
    """Every task whose status differs between the two real runs (paired by name and
    occurrence), for the record: Ansible's rows of include_tasks/include_role, which hfplay
    does not report, left out."""
    inc = re.compile(r"(^|: )(ansible\.builtin\.)?(include_tasks|include_role|import_tasks)( |$)")
    def by_name(run):
        out = {}
        for n, s, f in run.rows:
            if run is an and inc.search(n):
                continue
            out.setdefault(n, []).append((s, msg_of(f)))
        return out
    h, a = by_name(hf), by_name(an)
    out = [f"# status differences, real run: hfplay vs ansible (tasks in either; 'absent': no row)"]
    order = [n for n, _, _ in an.rows] + [n for n, _, _ in hf.rows]
    seen = set()
    for n in order:
        if n in seen or (n not in h and n not in a):
            continue
        seen.add(n)
        hs, as_ = h.get(n, []), a.get(n, [])
        for i in range(max(len(hs), len(as_))):
            x = hs[i] if i < len(hs) else ("absent", "")
            y = as_[i] if i < len(as_) else ("absent", "")
            if x[0] != y[0]:
                out.append(f"{n}: hfplay {x[0]}{(' (' + x[1] + ')') if x[1] else ''}; ansible {y[0]}{(' (' + y[1] + ')') if y[1] else ''}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
