"""deploy/: the compose file, the OVMS configuration and its graph say what the bot and OVMS actually read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings, env_name
from entry.export_cli import OVMS_GRAPH, ovms_graph

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MODEL = "Phi-3-mini-4k-instruct"
# Every variable the bot reads, as the environment names it.
SETTINGS_VARIABLES = {env_name(name) for name in Settings.model_fields}
BOT_VARIABLE = re.compile(r"^(?:BOT|DISCORD|SLACK)_[A-Z0-9_]+$")


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def bot_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in spec["services"].items() if "build" in service}


def test_compose_runs_ovms_postgres_and_two_bot_processes() -> None:
    services = compose()["services"]
    assert services["ovms"]["image"].startswith("openvino/model_server:")
    assert "/models/config.json" in services["ovms"]["command"]
    assert services["postgres"]["image"] == "postgres:15" and "healthcheck" in services["postgres"]
    bots = bot_services(compose())
    assert len(bots) == 2
    for service in bots.values():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["env_file"] == "secrets.env"  # secrets stay out of compose.yaml
        environment = service["environment"]
        assert environment["BOT_ENGINE_URL"] == "http://ovms:8000/v3"
        assert environment["BOT_ENGINE_MODEL"] == MODEL
        assert any(volume.endswith(f":{environment['BOT_MODEL_PATH']}:ro") for volume in service["volumes"])
        assert f":{environment['BOT_METRICS_PORT']}/healthz" in " ".join(service["healthcheck"]["test"])
    assert sorted(service["environment"]["DISCORD_SHARD_IDS"] for service in bots.values()) == ["0", "1"]


def test_every_bot_variable_in_deploy_is_a_real_setting() -> None:
    used = set()
    for service in bot_services(compose()).values():
        used |= set(service["environment"])
    for line in (DEPLOY / "secrets.env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            used.add(line.split("=", 1)[0])
    named = {name for name in used if BOT_VARIABLE.match(name)}
    assert {"BOT_ENGINE_URL", "BOT_DATABASE_URL", "BOT_MODEL_PATH", "DISCORD_SHARD_COUNT"} <= named
    assert named - SETTINGS_VARIABLES == set()


def test_ovms_config_names_the_graph_directory() -> None:
    config = json.loads((DEPLOY / "ovms" / "config.json").read_text(encoding="utf-8"))
    assert config["mediapipe_config_list"] == [{"name": MODEL, "base_path": MODEL}]
    assert (DEPLOY / "compose.yaml").read_text(encoding="utf-8").count(f"/{MODEL}/ready") == 1


def test_graph_turns_on_continuous_batching_with_prefix_caching() -> None:
    graph = (DEPLOY / "ovms" / "graph.pbtxt").read_text(encoding="utf-8")
    assert graph == OVMS_GRAPH  # what `bot export --for-ovms` writes
    options = dict(re.findall(r"^\s+(\w+): (.+?),?$", graph.split("LLMCalculatorOptions]")[1], re.MULTILINE))
    assert options["enable_prefix_caching"] == "true"
    assert options["models_path"] == '"./"'
    assert int(options["cache_size"]) > 0
    # All bot processes together send one server no more than it batches (each counts only its own requests).
    capacities = [int(service["environment"]["BOT_ENGINE_CAPACITY"]) for service in bot_services(compose()).values()]
    assert len(capacities) >= 2 and sum(capacities) <= int(options["max_num_seqs"])
    assert json.loads(options["plugin_config"].strip("'")) == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    assert 'input_side_packet: "LLM_NODE_RESOURCES:llm"' in graph and 'calculator: "HttpLLMCalculator"' in graph
    assert 'device: "GPU"' in ovms_graph("GPU") and 'device: "CPU"' not in ovms_graph("GPU")
