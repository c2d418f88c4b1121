"""Helpers of the test modules, one module per concern (fixtures live in conftest.py).

Everything here talks to real servers: osmem (OpenSearch-compatible) and Tansu (Kafka) started
through ops/demo-server, and esproxy itself started as a subprocess.
"""
