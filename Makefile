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
