"""esproxy configs as dicts (written as YAML by support.process.Esproxy) and the readiness lines they promise."""

from __future__ import annotations

from typing import Any, Optional


def proxy_config(
    port: int,
    primary: str,
    kafka: Optional[str] = None,
    topic: Optional[str] = None,
    *,
    chan_size: Optional[int] = None,
    codec: Optional[str] = None,
    header: Optional[dict] = None,
    labels: Optional[dict] = None,
    timeout: Optional[str] = None,
    sync: Optional[bool] = None,
) -> dict:
    proxy: dict = {"port": port, "host": "127.0.0.1"}
    if header is not None:
        proxy["header"] = header
    if labels is not None:
        proxy["labels"] = labels
    prim: dict = {"url": primary}
    if timeout is not None:
        prim["timeout"] = timeout
    conf: dict = {"source": {"proxies": [proxy]}, "destination": {"primaries": [prim]}}
    if chan_size is not None:
        conf["chanSize"] = chan_size
    if kafka is not None:
        kd: dict = {"topic": topic, "brokers": [kafka]}
        if codec is not None:
            kd["codec"] = codec
        if sync is not None:
            kd["sync"] = sync
        conf["destination"]["kafkas"] = [kd]
    return conf


def replay_config(kafka: str, topic: str, group: str, target: str, **extra: Any) -> dict:
    src = {"brokers": [kafka], "topics": [topic], "group": group, "sessionTimeout": "6s"}
    src.update(extra)
    return {"source": {"kafkas": [src]}, "destination": {"primaries": [{"url": target}]}}


def merge_configs(*confs: dict) -> dict:
    """Merge role configs into one file (lists under the same key are concatenated)."""
    out: dict = {}
    for conf in confs:
        for key, val in conf.items():
            if isinstance(val, dict):
                section = out.setdefault(key, {})
                for k2, v2 in val.items():
                    section.setdefault(k2, [])
                    section[k2] = section[k2] + list(v2)
            else:
                out[key] = val
    return out


def expected_ready_lines(config: Any) -> list:
    """The readiness log lines (needle, count) that the spec promises for this config."""
    if not isinstance(config, dict):
        return []
    src = config.get("source") or {}
    proxies = [p for p in src.get("proxies") or [] if not p.get("disabled")]
    kafkas = [k for k in src.get("kafkas") or [] if not k.get("disabled")]
    out = []
    if proxies:
        out.append(("proxy listening on", len(proxies)))
    if kafkas:
        out.append(("assigned partitions", len(kafkas)))
    return out
