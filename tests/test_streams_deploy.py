"""The stream processor's stack (deploy/actionrunner-streams.template.json, generated): the
mapping the seed's processor needs, and the function's permissions and environment."""

from __future__ import annotations

import json

from actionrunner import deploy
from actionrunner.settings import Settings


def template() -> dict:
    return json.loads((deploy.DEPLOY_DIR / "actionrunner-streams.template.json").read_text())


def test_the_mapping_reports_partial_failures_bisects_and_has_an_on_failure_destination() -> None:
    resources = template()["Resources"]
    mapping = resources["StreamMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["ParallelizationFactor"] == {"Ref": "ParallelizationFactor"}
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FailureQueue", "Arn"]}
    alarm = resources["IteratorAgeAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "IteratorAge")


def test_the_function_runs_the_handler_with_settings_it_understands() -> None:
    function = template()["Resources"]["Processor"]["Properties"]
    assert function["Handler"] == "actionrunner.streams.handler.handler"
    env = function["Environment"]["Variables"]
    settings_fields = {k.removeprefix("ACTIONRUNNER_").lower() for k in env
                       if k.startswith("ACTIONRUNNER_") and not k.startswith("ACTIONRUNNER_STREAM_")}
    assert settings_fields <= set(Settings.model_fields)
    assert {"ACTIONRUNNER_STREAM_TOPIC_ARN", "ACTIONRUNNER_STREAM_WATERMARK",
            "ACTIONRUNNER_STREAM_DLQ_URL"} <= set(env)
    from actionrunner.streams import handler

    assert all(name in (handler.__doc__ or "") for name in env if name.startswith("ACTIONRUNNER_STREAM_"))
