module sidecarlab/config-server-buildpack/supply

go 1.22
