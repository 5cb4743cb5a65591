"""hfplay's bridge to an Ansible installation (run with its Python; JSON lines on stdin/stdout).

Requests:
  {"op": "resolve", "name": "community.mysql.mysql_user"}
      -> {"ok": true, "fqcn": "...", "path": "..."} or {"ok": false, "error": "..."}
  {"op": "build", "fqcn": "...", "path": "...", "args": {...}, "python": "/usr/bin/python3"}
      -> {"ok": true, "payload": "<base64 of the AnsiballZ wrapper>"}
The payload is built by ansible-core itself (module_common.modify_module): the module with the
module_utils it imports, its arguments embedded, exactly as ansible-playbook ships it with
pipelining. hfplay feeds it to the target's Python on stdin over its own SSH connection.
"""
import base64
import json
import sys
import traceback


def main():
    from ansible import __version__
    from ansible.plugins.loader import action_loader, init_plugin_loader, module_loader

    init_plugin_loader([])
    from ansible.executor.module_common import modify_module
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    templar = Templar(loader=DataLoader())

    def resolve(req):
        ctx = module_loader.find_plugin_with_context(req["name"])
        if not ctx.resolved:
            return {"ok": False, "error": "no such module in this Ansible installation"}
        fqcn, path = ctx.resolved_fqcn, ctx.plugin_resolved_path
        if not path.endswith(".py"):
            return {"ok": False, "error": f"{fqcn} is not a Python module ({path})"}
        # A module with its own action plugin needs Ansible's controller side to run it.
        action = action_loader.find_plugin_with_context(fqcn)
        if action.resolved and action.resolved_fqcn not in ("ansible.builtin.normal", "ansible.legacy.normal"):
            return {"ok": False, "error": f"{fqcn} runs through the action plugin {action.resolved_fqcn} on the controller, which hfplay does not run"}
        return {"ok": True, "fqcn": fqcn, "path": path, "version": __version__}

    def build(req):
        args = dict(req["args"])
        args.update({
            "_ansible_check_mode": bool(req.get("check")),
            "_ansible_diff": bool(req.get("diff")),
            "_ansible_no_log": bool(req.get("no_log")),
            "_ansible_debug": False,
            "_ansible_verbosity": 0,
            "_ansible_version": __version__,
            "_ansible_module_name": req["fqcn"],
            "_ansible_syslog_facility": "LOG_USER",
            "_ansible_selinux_special_fs": ["fuse", "nfs", "vboxsf", "ramfs", "9p", "vfat"],
            "_ansible_socket": None,
            "_ansible_shell_executable": "/bin/sh",
            "_ansible_keep_remote_files": False,
            "_ansible_tmpdir": None,
            "_ansible_remote_tmp": "~/.ansible/tmp",
            "_ansible_ignore_unknown_opts": False,
            "_ansible_target_log_info": None,
            "_ansible_tracebacks_for": [],
        })
        built = modify_module(
            module_name=req["fqcn"],
            module_path=req["path"],
            module_args=args,
            templar=templar,
            task_vars={"ansible_python_interpreter": req["python"]},
            module_compression="ZIP_DEFLATED",
        )
        if built.module_style != "new":
            return {"ok": False, "error": f"{req['fqcn']}: module style '{built.module_style}' is not supported"}
        return {"ok": True, "payload": base64.b64encode(built.b_module_data).decode()}

    ops = {"resolve": resolve, "build": build}
    print(json.dumps({"ok": True, "ready": __version__}), flush=True)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            out = ops[req["op"]](req)
        except Exception as e:  # one bad request must not end the bridge
            out = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        main()
    except ImportError as e:
        print(json.dumps({"ok": False, "error": f"ansible is not importable: {e}"}), flush=True)
        sys.exit(3)
