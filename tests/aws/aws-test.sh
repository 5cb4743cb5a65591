#!/usr/bin/env bash
# playbooks/aws.yml and aws-teardown.yml against a real EC2/EFS/IAM-compatible API server
# (moto, started here by tests/aws/moto.sh), with real hfplay:
#   1. --check on a fresh account predicts changes;
#   2. the real run makes exactly the changes --check predicted (per task and loop item), and the
#      resources exist as the topology says (instances per group, the floating IP on db1's
#      interface, the db role's policy allowing exactly three calls, EFS with a mount target);
#   3. the written inventory is one playbooks/site.yml accepts (--list-hosts), with the
#      instances' addresses;
#   4. a second run and --check on the converged account change nothing;
#   5. the teardown removes everything the cluster tag and names lead to; a second teardown
#      changes nothing.
# Usage: tests/aws/aws-test.sh   (needs target/release/hfplay; `make test` builds it)
set -euo pipefail
cd "$(dirname "$0")/../.."
source cluster/lib.sh

HFPLAY=${HFPLAY:-target/release/hfplay}
[ -x "$HFPLAY" ] || die "$HFPLAY missing: cargo build --release"
export HF_MOTO_ADDR=${HF_MOTO_ADDR:-127.0.0.1:5055}
WORK=$(mktemp -d /tmp/heirflow-aws-test.XXXXXX)
cleanup() {
  tests/aws/moto.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

tests/aws/moto.sh up
tests/aws/moto.sh reset
PY="$CACHE_DIR/moto-venv/bin/python"   # boto3 comes with moto: the test's own view of the API

export AWS_ENDPOINT_URL
AWS_ENDPOINT_URL=$(tests/aws/moto.sh url)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN

# A small topology keeps the run short; the shape (groups, tags, roles) is the production one.
cat >"$WORK/vars.yml" <<EOF
aws_cluster: hftest
aws_region: us-east-1
aws_image_id: $("$PY" -c "
import boto3; print(boto3.client('ec2').describe_images(Owners=['amazon'])['Images'][0]['ImageId'])")
aws_key_name: hftest-key
aws_operator_cidr: 198.51.100.0/24
aws_inventory_dir: $WORK/inventory
aws_groups:
  - {group: db, prefix: db, count: 2, type: t3.large}
  - {group: queue, prefix: queue, count: 3, type: t3.medium}
  - {group: scheduler, prefix: sched, count: 2, type: t3.large}
  - {group: worker, prefix: worker, count: 2, type: t3.xlarge}
  - {group: web, prefix: web, count: 1, type: t3.medium}
EOF
"$PY" -c "import boto3; boto3.client('ec2').create_key_pair(KeyName='hftest-key')" >/dev/null

FAILS=0
pass() { printf '    PASS  %s\n' "$*"; }
fail() { printf '    FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# play: runs a playbook with --json into $WORK/$name.json; prints the recap line.
play() {
  local name=$1; shift
  local t0; t0=$(now)
  if ! "$HFPLAY" "$@" -e @"$WORK/vars.yml" --json >"$WORK/$name.json" 2>"$WORK/$name.err"; then
    cat "$WORK/$name.err" >&2
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [print(t['task'], h, r) for p in d['plays'] for t in p['tasks'] for h, r in t['hosts'].items() if 'failed' in json.dumps(r)]" "$WORK/$name.json" >&2 || true
    die "$name: hfplay $* failed"
  fi
  info "$name: $(changed_count "$WORK/$name.json") changed in $(elapsed "$t0") s"
}
# changed_set FILE: one line per task (and loop item) that reported changed.
changed_set() {
  python3 - "$1" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for play in doc["plays"]:
    for t in play["tasks"]:
        for host, r in t["hosts"].items():
            for i, one in enumerate(r if isinstance(r, list) else [r]):
                if one.get("changed"):
                    print(f"{t['task']} [{host}] #{i}")
EOF
}
changed_count() { changed_set "$1" | wc -l; }

log "check mode on a fresh account"
play check-fresh playbooks/aws.yml --check
"$PY" - <<'EOF' || fail "--check created nothing"
import boto3, sys
ec2 = boto3.client("ec2")
vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["hftest"]}])["Vpcs"]
sys.exit(1 if vpcs else 0)
EOF

log "real run"
play apply playbooks/aws.yml
changed_set "$WORK/check-fresh.json" >"$WORK/predicted"
changed_set "$WORK/apply.json" >"$WORK/made"
check "the real run made exactly the $(wc -l <"$WORK/made") changes --check predicted" \
  diff -u "$WORK/predicted" "$WORK/made"

log "the topology in the API"
if "$PY" - "$WORK/inventory" <<'EOF'; then pass "instances, floating IP, IAM, EFS as the topology says"; else fail "topology"; fi
import boto3, json, sys
ec2, iam, efs = boto3.client("ec2"), boto3.client("iam"), boto3.client("efs")
ok = True
def expect(what, got, want):
    global ok
    if got != want:
        print(f"      {what}: got {got!r}, want {want!r}")
        ok = False
res = ec2.describe_instances(Filters=[{"Name": "tag:heirflow-cluster", "Values": ["hftest"]},
                                      {"Name": "instance-state-name", "Values": ["running"]}])
inst = [i for r in res["Reservations"] for i in r["Instances"]]
tags = lambda i: {t["Key"]: t["Value"] for t in i.get("Tags", [])}
groups = {}
for i in inst:
    groups.setdefault(tags(i)["heirflow-group"], []).append(tags(i)["Name"])
expect("hosts per group", {g: sorted(v) for g, v in groups.items()},
       {"db": ["db1", "db2"], "queue": ["queue1", "queue2", "queue3"], "scheduler": ["sched1", "sched2"],
        "worker": ["worker1", "worker2"], "web": ["web1"]})
byname = {tags(i)["Name"]: i for i in inst}
for n, i in byname.items():
    prof = i.get("IamInstanceProfile", {}).get("Arn", "")
    expect(f"{n} instance profile", prof.endswith("/hftest-db"), n.startswith("db"))
sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["hftest"]}])["SecurityGroups"]
expect("one security group", len(sg), 1)
perms = sg[0]["IpPermissions"]
selfref = [p for p in perms if p["IpProtocol"] == "-1" and any(g["GroupId"] == sg[0]["GroupId"] for g in p["UserIdGroupPairs"])]
expect("members reach each other", len(selfref), 1)
ops = sorted(p["FromPort"] for p in perms if any(r["CidrIp"] == "198.51.100.0/24" for r in p.get("IpRanges", [])))
expect("operator ports", ops, [22, 5555, 8080])
eni = byname["db1"]["NetworkInterfaces"][0]["NetworkInterfaceId"]
addrs = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["PrivateIpAddresses"]
expect("floating IP on db1's interface", [a["PrivateIpAddress"] for a in addrs if not a["Primary"]], ["10.0.1.100"])
doc = iam.get_role_policy(RoleName="hftest-db", PolicyName="floating-ip")["PolicyDocument"]
if isinstance(doc, str):
    doc = json.loads(doc)
expect("the db role's actions", sorted(doc["Statement"][0]["Action"]),
       ["ec2:AssignPrivateIpAddresses", "ec2:DescribeNetworkInterfaces", "ec2:UnassignPrivateIpAddresses"])
expect("the db role's managed policies", iam.list_attached_role_policies(RoleName="hftest-db")["AttachedPolicies"], [])
fs = efs.describe_file_systems(CreationToken="hftest-dags")["FileSystems"]
expect("one EFS", len(fs), 1)
mts = efs.describe_mount_targets(FileSystemId=fs[0]["FileSystemId"])["MountTargets"]
expect("EFS mount target in the subnet", [m["SubnetId"] for m in mts], [byname["db1"]["SubnetId"]])
# The written inventory carries the instances' addresses and the EFS name.
hosts = open(sys.argv[1] + "/hosts.ini").read()
for n, i in byname.items():
    line = f"{n} ansible_host={i['PrivateIpAddress']} heirflow_private_ip={i['PrivateIpAddress']}"
    expect(f"inventory line of {n}", line in hosts, True)
allvars = open(sys.argv[1] + "/group_vars/all.yml").read()
expect("inventory EFS address", f'heirflow_efs_address: "{fs[0]["FileSystemId"]}.efs.us-east-1.amazonaws.com"' in allvars, True)
expect("inventory floating IP", 'heirflow_floating_ip: "10.0.1.100"' in allvars, True)
sys.exit(0 if ok else 1)
EOF

log "the written inventory serves site.yml"
"$HFPLAY" playbooks/site.yml -i "$WORK/inventory" --list-hosts >"$WORK/list-hosts" 2>&1 ||
  { cat "$WORK/list-hosts"; fail "site.yml --list-hosts with the written inventory"; }
for h in db1 db2 queue1 queue2 queue3 sched1 sched2 worker1 worker2 web1; do
  grep -qw "$h" "$WORK/list-hosts" || fail "site.yml does not list $h"
done
pass "site.yml --list-hosts lists the 10 hosts"

log "idempotence"
play rerun playbooks/aws.yml
check "a second run changes nothing" test "$(changed_count "$WORK/rerun.json")" = 0
play check-converged playbooks/aws.yml --check
check "--check on the converged account changes nothing" test "$(changed_count "$WORK/check-converged.json")" = 0

log "teardown"
play teardown playbooks/aws-teardown.yml
play teardown-again playbooks/aws-teardown.yml
check "a second teardown changes nothing" test "$(changed_count "$WORK/teardown-again.json")" = 0
if "$PY" - "$WORK/inventory" <<'EOF'; then pass "nothing left: instances, EFS, IAM, security group, subnet, VPC, inventory"; else fail "teardown left something"; fi
import boto3, os, sys
ec2, iam, efs = boto3.client("ec2"), boto3.client("iam"), boto3.client("efs")
left = []
res = ec2.describe_instances(Filters=[{"Name": "tag:heirflow-cluster", "Values": ["hftest"]}])
left += [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
left += [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["hftest"]}])["Vpcs"]]
left += [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "tag:heirflow-cluster", "Values": ["hftest"]}])["Subnets"]]
left += [g["GroupId"] for g in ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["hftest"]}])["SecurityGroups"]]
left += [f["FileSystemId"] for f in efs.describe_file_systems()["FileSystems"]]
left += [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("hftest")]
left += [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"] if p["InstanceProfileName"].startswith("hftest")]
if os.path.exists(sys.argv[1]):
    left.append(sys.argv[1])
if left:
    print("      left:", ", ".join(left))
sys.exit(1 if left else 0)
EOF

[ "$FAILS" = 0 ] || die "aws test: $FAILS check(s) failed"
log "aws test: every check passed"
