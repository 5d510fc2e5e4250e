"""Test harness for Cairn: real `cairn-node` / `cairn-gateway` processes on loopback.

cluster     Cluster: N nodes and a gateway, started, killed and restarted by the tests
servers     Node, Gateway: one process each, its ports, directories and admin routes
procs       the binaries, child processes with logs (ManagedProcess), /proc process trees
net         free ports, plain HTTP GETs, waiting for a process to answer
s3client    boto3 clients and aws-cli runs against a cluster
exposition  the Prometheus text parser every metrics assertion goes through
wait        wait_for: polling until a condition holds
"""
