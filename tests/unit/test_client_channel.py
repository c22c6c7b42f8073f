"""client/channel.py: the service config the client's channel gets (round_robin, retries of UNAVAILABLE)."""

from __future__ import annotations

import json

from client.channel import MAX_ATTEMPTS, channel_options, previous_attempts, service_config


def test_round_robin_and_retries_follow_the_clients_settings():
    config = service_config(retries=3, backoff=0.2)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "digits.v1.DigitClassifier"}]
    policy = method["retryPolicy"]
    assert policy["maxAttempts"] == 4 and policy["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    assert policy["initialBackoff"] == "0.200s" and policy["maxBackoff"] == "0.800s"


def test_retries_are_capped_as_grpc_caps_them_and_zero_means_none():
    assert service_config(retries=10, backoff=0.1)["methodConfig"][0]["retryPolicy"]["maxAttempts"] == MAX_ATTEMPTS
    assert "methodConfig" not in service_config(retries=0, backoff=0.2)  # still round-robin, never retried


def test_the_channel_options_carry_the_config_and_enable_retries():
    options = dict(channel_options(retries=2, backoff=0.5))
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == service_config(2, 0.5)


def test_previous_attempts_reads_grpcs_trailer():
    assert previous_attempts((("grpc-previous-rpc-attempts", "3"),)) == 3
    assert previous_attempts(None) == 0 and previous_attempts((("other", "x"),)) == 0
