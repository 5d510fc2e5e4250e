"""Test harness for Cairn: real `cairn-node` / `cairn-gateway` processes on loopback."""

from .cluster import Cluster, ClusterError, Node, Gateway, make_client, free_port, bin_dir, binary  # noqa: F401
