"""What every floor uses: the message contract (beans, Kafka messages, the dead-letter format,
``_bulk``), the settings declaration and its loader, the counters, retries and deadlines, the log
format and secret masking, signals, and the WSGI error bodies every listener answers with. Imports
nothing above it but for two ties (the config checks the follow rules and the Kafka security
settings, see tests/test_unit_import_graph.py).
"""
