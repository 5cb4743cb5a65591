# Heirflow top-level targets.
.PHONY: image local-up local-down local-clean local-add local-remove

image:        ## build (or reuse) the local-cluster base image
	cluster/image.sh

local-up:     ## start the local cluster (containers with systemd + sshd) and write inventory/local
	cluster/up.sh

local-add:    ## add a host to the running cluster: make local-add GROUP=worker (then make deploy)
	cluster/add.sh $(GROUP)

local-remove: ## drain a host and remove it: make local-remove HOST=hf-worker5 (then make deploy)
	cluster/remove.sh $(HOST)

local-down:   ## remove the cluster's containers, network and volumes (keeps images, SSH key, caches)
	cluster/down.sh

local-clean:  ## local-down, plus the images and the apt/pip caches
	cluster/down.sh --clean

.PHONY: build test test-unit test-aws test-cluster test-compat bench-roles demo deploy

build:        ## build hfplay (release)
	cargo build --release --workspace --bins --examples

test: test-unit test-aws test-compat test-cluster  ## every test: what .ci/run runs

# Every build here is the one workspace build (`cargo test` shares its dependencies too): a
# one-package build unifies other features and recompiles the AWS SDK, minutes on 2 cores.

test-unit:    ## unit tests, hfplay over SSH to its own test containers, heir-supervisor against real Postgres
	@date -u +'=== test-unit start %T'
	scripts/test-deps.sh
	@# The base image (debootstrap: mostly downloads) builds while cargo compiles; the SSH tests
	@# and the cluster wait on image.sh's lock and then find it built.
	@mkdir -p .cache; cluster/image.sh > .cache/image-build.log 2>&1 & img=$$!; \
	  cargo test --release --workspace; rc=$$?; \
	  wait $$img || { echo "cluster/image.sh failed (.cache/image-build.log):"; tail -20 .cache/image-build.log; }; \
	  exit $$rc
	@date -u +'=== test-unit end %T'

test-aws:     ## playbooks/aws.yml + aws-teardown.yml against an EC2-compatible API server (moto): --check, apply, re-run, teardown
	@date -u +'=== test-aws start %T'
	cargo build --release --workspace --bins --examples
	tests/aws/aws-test.sh
	@date -u +'=== test-aws end %T'

test-cluster: ## the local cluster end to end: up, deploy with hfplay, DAG on >= 2 workers, re-run/--check changed=0, down
	@date -u +'=== test-cluster start %T'
	tests/cluster/deploy-test.sh
	@date -u +'=== test-cluster end %T'

test-compat:  ## public Ansible roles (shared/roles-corpus) run by hfplay and ansible-playbook on twin fresh hosts: same changes, idempotent, --check
	@date -u +'=== test-compat start %T'
	tests/compat/run.sh
	@date -u +'=== test-compat end %T'

bench-roles:  ## hfplay vs ansible-playbook over the role corpus: fresh and re-run medians, ratios (BENCH_RUNS=3)
	bench/roles-corpus.sh

deploy: build ## deploy Heirflow onto the local cluster with hfplay
	./target/release/hfplay playbooks/site.yml -i inventory/local

demo: build local-up deploy  ## one command: cluster up, deploy, run the smoke DAG and model_select
	scripts/smoke-dag.sh
	scripts/model-select.sh
