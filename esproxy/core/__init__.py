"""What every floor uses: the message contract (beans, Kafka messages, the dead-letter format,
``_bulk``), the settings declaration and its loader, the counters, retries and deadlines, the log
format and secret masking, signals, and the WSGI error bodies every listener answers with. Imports
nothing above it: the checks of the follow rules and of the Kafka security settings, which the
config's sections hold, run in their own modules after loading (esproxy/configfile.py).
"""
