module sidecarlab/config-server

go 1.22
