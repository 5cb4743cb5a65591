# Heirflow top-level targets.
.PHONY: image local-up local-down local-clean

image:        ## build (or reuse) the local-cluster base image
	cluster/image.sh

local-up:     ## start the local cluster (containers with systemd + sshd) and write inventory/local
	cluster/up.sh

local-down:   ## remove the cluster's containers, network and volumes (keeps images, SSH key, caches)
	cluster/down.sh

local-clean:  ## local-down, plus the images and the apt/pip caches
	cluster/down.sh --clean

.PHONY: build test demo deploy

build:        ## build hfplay (release)
	cargo build --release

test:         ## all automated tests (unit + CLI); see README for the cluster checks
	cargo test --release --workspace

deploy: build ## deploy Heirflow onto the local cluster with hfplay
	./target/release/hfplay playbooks/site.yml -i inventory/local

demo: build local-up deploy  ## one command: cluster up, deploy, run the smoke DAG
	scripts/smoke-dag.sh
