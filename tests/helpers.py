"""Transitional: the helpers moved to tests/support/ (one module per concern); import from there.

Kept only so that test modules written before the split still import; removed once none does.
"""

from support.basics import REPO, free_port, kill_group, tcp_open, unique, wait_until  # noqa: F401
from support.beans import doc_writes, make_bean, writes_of  # noqa: F401
from support.configs import expected_ready_lines, merge_configs, proxy_config, replay_config  # noqa: F401
from support.elastic import compare_until_equal, es_cluster_id, es_doc, is_es_error  # noqa: F401
from support.kafka import (  # noqa: F401
    KAFKA_CONSUMER_OPTS,
    count_messages,
    create_topic,
    end_offsets_sum,
    produce_raw,
    read_topic,
    topic_partitions,
)
from support.load import Writer  # noqa: F401
from support.process import READY_TIMEOUT, STOP_TIMEOUT, Esproxy  # noqa: F401
from support.servers import DEMO_SERVER, DemoServer, RecordingServer  # noqa: F401
