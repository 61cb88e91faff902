"""The HTTP alert channels (Slack, Teams, generic webhook, Twilio) against a recording HTTP server
on loopback: what each sends, how it retries, and that no secret reaches an error or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import dagster as dg
import pydantic
import pytest

from resources.channels.alerting import AlertChannel, AlertDeliveryError, AlertMessage
from resources.channels.http_post import json_bytes, post_json, retry_after_seconds
from resources.channels.slack import SlackChannel
from resources.channels.teams import TeamsChannel
from resources.channels.twilio import SMS_MAX_CHARS, TwilioChannel
from resources.channels.webhook_channel import TIMESTAMP_HEADER, WebhookChannel
from tests import servers_http
from tests.servers_http import HttpRecorder, Reply, closed_port_url

pytestmark = pytest.mark.timeout(120)

http_recorder = servers_http.http_recorder

FAST = {"retries": 3, "backoff_seconds": 0.05, "timeout_seconds": 5}
SLACK_OK = Reply(200, {"ok": True, "channel": "C0123ABCD", "ts": "1700000000.000100"})
TWILIO_OK = Reply(201, {"sid": "SM" + "0" * 32, "status": "queued"})


def alert(**overrides: object) -> AlertMessage:
    fields: dict[str, object] = {
        "event": "failure", "workflow": "acme_retail", "title": "acme_retail_nightly_job failed",
        "text": "Step load_orders failed after 2 retries.\nSee the run for the full log.",
        "job": "acme_retail_nightly_job", "run_id": "5f1c2a9e-0b7d-4a51-9c3e-2f8d6b1e4a70",
        "status": "FAILURE", "duration_seconds": 125.4, "failed_step": "load_orders",
        "error": "ValueError: column order_id missing", "run_url":
        "http://dagster.example/runs/5f1c2a9e-0b7d-4a51-9c3e-2f8d6b1e4a70",
        "details": {"rows": 12}}
    fields.update(overrides)
    return AlertMessage(**fields)  # type: ignore[arg-type]


def assert_no_secret(error: BaseException, secret_values: list[str]) -> None:
    """Neither the error, its repr, its chained cause nor its printed traceback shows a secret."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if error.__cause__ is not None:
        texts += [str(error.__cause__), repr(error.__cause__)]
    for secret in secret_values:
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text}"


# ---------------------------------------------------------------- one factory per channel


@dataclass
class Case:
    """A channel pointed at the recorder (or anywhere), the path its requests arrive at, the
    answer that means delivered, and the secrets that must never show."""

    channel: AlertChannel
    path: str
    ok: Reply
    secret_values: list[str]


def slack_case(base: str, prefix: str, **settings: object) -> Case:
    token = f"xoxb-{secrets.token_hex(16)}"
    channel = SlackChannel(token=token, channel="#data-alerts", base_url=f"{base}{prefix}/api/",
                           **{**FAST, **settings})
    return Case(channel, f"{prefix}/api/chat.postMessage", SLACK_OK, [token])


def teams_case(base: str, prefix: str, **settings: object) -> Case:
    token = secrets.token_hex(16)
    path = f"{prefix}/webhookb2/{token}/IncomingWebhook/{secrets.token_hex(16)}"
    url = f"{base}{path}"
    return Case(TeamsChannel(webhook_url=url, **{**FAST, **settings}), path, Reply(200, "1"),
                [url, path, token])


def webhook_case(base: str, prefix: str, **settings: object) -> Case:
    token, key = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    url = f"{base}{prefix}/hook?token={token}"
    channel = WebhookChannel(url=url, secret=key, **{**FAST, **settings})
    return Case(channel, f"{prefix}/hook", Reply(204), [url, token, key])


def twilio_case(base: str, prefix: str, **settings: object) -> Case:
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    channel = TwilioChannel(account_sid=sid, auth_token=token, from_number="+15005550006",
                            to_numbers=["+15555550100"], base_url=f"{base}{prefix}",
                            **{**FAST, **settings})
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    return Case(channel, f"{prefix}/2010-04-01/Accounts/{sid}/Messages.json", TWILIO_OK,
                [token, basic])


CASES: dict[str, Callable[..., Case]] = {"slack": slack_case, "teams": teams_case,
                                         "webhook": webhook_case, "twilio": twilio_case}


@pytest.fixture(params=sorted(CASES))
def case_factory(request: pytest.FixtureRequest, http_recorder: HttpRecorder
                 ) -> Callable[..., Case]:
    """Builds the parametrised channel on a fresh path of the recorder (or at `base`)."""
    factory = CASES[request.param]

    def build(base: str | None = None, **settings: object) -> Case:
        return factory(base or http_recorder.url, http_recorder.unique_path(request.param),
                       **settings)
    return build


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log line (DEBUG and up) of our resources and slack_sdk, formatted (pytest's
    logging plugin is off in these runs, so a handler of our own)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("resources", "slack_sdk", "urllib3")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


# ---------------------------------------------------------------- what each channel sends


def test_slack_posts_chat_post_message(http_recorder: HttpRecorder) -> None:
    case = slack_case(http_recorder.url, http_recorder.unique_path("slack"))
    http_recorder.script(case.path, SLACK_OK)
    message = alert()
    case.channel.send_alert(message)

    [request] = http_recorder.requests(case.path)
    assert request.method == "POST" and request.path.endswith("/api/chat.postMessage")
    assert request.headers["Authorization"] == f"Bearer {case.secret_values[0]}"
    sent = request.json()
    assert sent["channel"] == "#data-alerts"
    assert sent["text"] == f"{message.title}\n{message.text}"
    blocks = sent["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                    "text": message.title}}
    assert blocks[1]["text"]["text"] == message.text
    context = next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]
    assert "acme_retail_nightly_job" in context and message.run_id in context
    assert "2 min 05 s" in context
    [button] = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert button["url"] == message.run_url and button["text"]["text"] == "Open run"
    assert case.channel.describe() == "slack #data-alerts"


def test_slack_escapes_and_skips_the_button_without_run_url(http_recorder: HttpRecorder) -> None:
    case = slack_case(http_recorder.url, http_recorder.unique_path("slack"))
    http_recorder.script(case.path, SLACK_OK)
    case.channel.send_alert(alert(text="rows < 10 & > 0", run_url=None))
    sent = http_recorder.requests(case.path)[0].json()
    assert sent["text"].endswith("rows &lt; 10 &amp; &gt; 0")
    assert all(b["type"] != "actions" for b in sent["blocks"])


def test_slack_ok_false_names_the_error_code(http_recorder: HttpRecorder) -> None:
    case = slack_case(http_recorder.url, http_recorder.unique_path("slack"))
    http_recorder.script(case.path, Reply(200, {"ok": False, "error": "channel_not_found"}))
    with pytest.raises(AlertDeliveryError) as raised:
        case.channel.send_alert(alert())
    assert "channel_not_found" in str(raised.value)
    assert "slack #data-alerts (host 127.0.0.1:" in str(raised.value)
    assert len(http_recorder.requests(case.path)) == 1  # a refusal is not retried
    assert_no_secret(raised.value, case.secret_values)


def test_slack_token_with_a_stray_newline_is_sent_stripped(http_recorder: HttpRecorder) -> None:
    token = f"xoxb-{secrets.token_hex(16)}"
    prefix = http_recorder.unique_path("slack")
    channel = SlackChannel(token=token + "\n", channel="C0123ABCD",
                           base_url=f"{http_recorder.url}{prefix}/api", **FAST)
    http_recorder.script(f"{prefix}/api/chat.postMessage", SLACK_OK)
    channel.send_alert(alert())  # base_url without the trailing slash works too
    [request] = http_recorder.requests(f"{prefix}/api/chat.postMessage")
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert channel.describe() == "slack C0123ABCD"


def test_teams_posts_an_adaptive_card(http_recorder: HttpRecorder) -> None:
    case = teams_case(http_recorder.url, http_recorder.unique_path("teams"))
    http_recorder.script(case.path, Reply(200, "1"))
    message = alert()
    case.channel.send_alert(message)

    [request] = http_recorder.requests(case.path)
    assert request.headers["Content-Type"].startswith("application/json")
    sent = request.json()
    assert sent["type"] == "message"
    [attachment] = sent["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"] == message.title
    assert card["body"][1]["text"] == message.text
    facts = {f["title"]: f["value"] for f in next(b for b in card["body"]
                                                 if b["type"] == "FactSet")["facts"]}
    assert facts == {"Workflow": "acme_retail", "Job": "acme_retail_nightly_job",
                     "Run id": message.run_id, "Status": "FAILURE", "Duration": "2 min 05 s",
                     "Failed step": "load_orders"}
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open run",
                                "url": message.run_url}]
    assert case.channel.describe() == f"teams webhook (host {http_recorder.host})"


def test_teams_without_run_url_or_optional_facts(http_recorder: HttpRecorder) -> None:
    case = teams_case(http_recorder.url, http_recorder.unique_path("teams"))
    case.channel.send_alert(alert(event="success", run_url=None, failed_step=None, error=None,
                                  duration_seconds=None))
    card = http_recorder.requests(case.path)[0].json()["attachments"][0]["content"]
    assert "actions" not in card
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert {f["title"] for f in facts} == {"Workflow", "Job", "Run id", "Status"}


def test_teams_connector_failure_answered_with_200(http_recorder: HttpRecorder) -> None:
    case = teams_case(http_recorder.url, http_recorder.unique_path("teams"))
    http_recorder.script(case.path, Reply(200, "Webhook message delivery failed with error: "
                                               "Microsoft Teams endpoint returned HTTP error 429"))
    with pytest.raises(AlertDeliveryError, match="reports that delivery failed") as raised:
        case.channel.send_alert(alert())
    assert_no_secret(raised.value, case.secret_values)


def verifies(secret: str, request: servers_http.Recorded, header: str) -> bool:
    """What a receiver does, from the documented scheme only."""
    timestamp = request.headers[TIMESTAMP_HEADER]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers[header], f"sha256={expected}")


def test_webhook_posts_the_message_dict_signed(http_recorder: HttpRecorder) -> None:
    case = webhook_case(http_recorder.url, http_recorder.unique_path("webhook"))
    message = alert(text="Zürich ✓ nightly")
    before = int(time.time())
    case.channel.send_alert(message)

    [request] = http_recorder.requests(case.path)
    assert request.json() == message.as_dict()
    assert request.body == json.dumps(message.as_dict(), sort_keys=True, separators=(",", ":"),
                                      ensure_ascii=False).encode("utf-8")
    assert "Zürich ✓".encode() in request.body  # UTF-8, not \u escapes
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    key = case.secret_values[2]
    assert before <= int(request.headers[TIMESTAMP_HEADER]) <= int(time.time())
    assert request.headers["X-Stagecoach-Signature"].startswith("sha256=")
    assert verifies(key, request, "X-Stagecoach-Signature")
    assert not verifies(key + "x", request, "X-Stagecoach-Signature")
    assert case.channel.describe() == f"webhook (host {http_recorder.host})"


def test_webhook_signature_covers_the_timestamp(http_recorder: HttpRecorder) -> None:
    """Replaying a body with a fresher timestamp does not verify."""
    case = webhook_case(http_recorder.url, http_recorder.unique_path("webhook"),
                        header="X-Hub-Signature-256")
    case.channel.send_alert(alert())
    [request] = http_recorder.requests(case.path)
    key = case.secret_values[2]
    assert verifies(key, request, "X-Hub-Signature-256")
    assert "X-Stagecoach-Signature" not in request.headers
    replayed = servers_http.Recorded(request.method, request.target, request.headers,
                                     request.body, request.at)
    del replayed.headers[TIMESTAMP_HEADER]
    replayed.headers[TIMESTAMP_HEADER] = str(int(time.time()) + 60)
    assert not verifies(key, replayed, "X-Hub-Signature-256")


def test_webhook_without_secret_is_unsigned(http_recorder: HttpRecorder) -> None:
    path = f"{http_recorder.unique_path('webhook')}/hook"
    WebhookChannel(url=f"{http_recorder.url}{path}", **FAST).send_alert(alert())
    [request] = http_recorder.requests(path)
    assert TIMESTAMP_HEADER not in request.headers
    assert "X-Stagecoach-Signature" not in request.headers


@pytest.mark.parametrize("header", ["X Signature", "X-Sig\r\nEvil: 1", "Content-Type", ""])
def test_webhook_header_name_is_checked(header: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="header") as raised:
        WebhookChannel(url="https://example.com/hook", header=header)
    assert "example.com/hook" not in str(raised.value)


def test_twilio_posts_a_form_per_number(http_recorder: HttpRecorder) -> None:
    prefix = http_recorder.unique_path("twilio")
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    numbers = ["+15555550100", "+447700900123"]
    channel = TwilioChannel(account_sid=sid, auth_token=token, from_number="+15005550006",
                            to_numbers=numbers, base_url=f"{http_recorder.url}{prefix}/", **FAST)
    path = f"{prefix}/2010-04-01/Accounts/{sid}/Messages.json"
    http_recorder.script(path, then=TWILIO_OK)
    message = alert(text="word " * 200)
    channel.send_alert(message)

    requests = http_recorder.requests(path)
    assert len(requests) == 2
    for number, request in zip(numbers, requests, strict=True):
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        scheme, _, encoded = request.headers["Authorization"].partition(" ")
        assert scheme == "Basic" and base64.b64decode(encoded).decode() == f"{sid}:{token}"
        form = parse_qs(request.body.decode(), strict_parsing=True)
        assert form["To"] == [number] and form["From"] == ["+15005550006"]
        [body] = form["Body"]
        assert body.startswith(f"{message.title}\nword word") and body.endswith("...")
        assert len(body) <= SMS_MAX_CHARS
    assert channel.describe() == "twilio +15555550100, +447700900123"


def test_twilio_one_number_refused_the_others_still_sent(http_recorder: HttpRecorder) -> None:
    prefix = http_recorder.unique_path("twilio")
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    numbers = ["+15555550100", "+15555550101", "+15555550102"]
    channel = TwilioChannel(account_sid=sid, auth_token=token, from_number="+15005550006",
                            to_numbers=numbers, base_url=f"{http_recorder.url}{prefix}", **FAST)
    path = f"{prefix}/2010-04-01/Accounts/{sid}/Messages.json"
    refusal = Reply(400, {"code": 21211, "message": "The 'To' number is not valid."})
    http_recorder.script(path, TWILIO_OK, refusal, then=TWILIO_OK)
    with pytest.raises(AlertDeliveryError) as raised:
        channel.send_alert(alert())
    text = str(raised.value)
    assert "1 of 3 messages failed: +15555550101 refused: HTTP 400" in text
    assert "21211" in text and "+15555550100" not in text.partition("messages failed")[2]
    sent_to = [parse_qs(r.body.decode())["To"][0] for r in http_recorder.requests(path)]
    assert sent_to == numbers
    assert_no_secret(raised.value, [token, base64.b64encode(f"{sid}:{token}".encode()).decode()])


@pytest.mark.parametrize(("field", "value"), [
    ("from_number", "15005550006"), ("from_number", "+1 500 555 0006"),
    ("to_numbers", ["+15555550100", "555-0101"]), ("to_numbers", []),
    ("to_numbers", "+15555550100"), ("to_numbers", ["+0155555501"]),
    ("to_numbers", ["+1234567890123456"])])
def test_twilio_numbers_must_be_e164(field: str, value: object) -> None:
    settings = {"account_sid": "AC123", "auth_token": "tok", "from_number": "+15005550006",
                "to_numbers": ["+15555550100"], field: value}
    with pytest.raises(pydantic.ValidationError, match=r"E\.164"):
        TwilioChannel(**settings)


def test_twilio_numbers_from_env_vars_are_checked_when_resolved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SC_TEST_TWILIO_FROM", "+15005550006")
    channel = TwilioChannel(account_sid="AC123", auth_token=dg.EnvVar("SC_TEST_TWILIO_TOKEN"),
                            from_number=dg.EnvVar("SC_TEST_TWILIO_FROM"),
                            to_numbers=["+15555550100"])
    assert channel is not None  # the env var's name is not taken for a number
    monkeypatch.setenv("SC_TEST_TWILIO_TOKEN", "tok")
    with dg.build_resources({"twilio": channel}) as resources:
        assert resources.twilio.from_number == "+15005550006"
    monkeypatch.setenv("SC_TEST_TWILIO_FROM", "0155")
    with pytest.raises(dg.DagsterResourceFunctionError) as raised, \
            dg.build_resources({"twilio": channel}):
        pass
    assert "'0155' is not an E.164 phone number" in str(raised.value.__cause__)


# ---------------------------------------------------------------- retries, for every channel


def test_503_twice_then_delivered(case_factory: Callable[..., Case],
                                  http_recorder: HttpRecorder) -> None:
    case = case_factory()
    http_recorder.script(case.path, Reply(503, "busy"), Reply(503, "busy"), then=case.ok)
    case.channel.send_alert(alert())
    assert len(http_recorder.requests(case.path)) == 3


def test_429_waits_for_retry_after(case_factory: Callable[..., Case],
                                   http_recorder: HttpRecorder) -> None:
    case = case_factory()
    http_recorder.script(case.path, Reply(429, "slow down", {"Retry-After": "1"}), then=case.ok)
    case.channel.send_alert(alert())
    first, second = http_recorder.requests(case.path)
    assert second.at - first.at >= 1.0


def test_400_fails_at_once(case_factory: Callable[..., Case],
                           http_recorder: HttpRecorder) -> None:
    case = case_factory()
    http_recorder.script(case.path, Reply(400, {"error": "invalid_payload"}), then=case.ok)
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as raised:
        case.channel.send_alert(alert())
    assert time.monotonic() - started < 1
    assert len(http_recorder.requests(case.path)) == 1
    assert "400" in str(raised.value) or "invalid_payload" in str(raised.value)
    assert case.channel.describe().split(" (")[0] in str(raised.value)
    assert_no_secret(raised.value, case.secret_values)


def test_5xx_every_time_fails_after_the_retries(case_factory: Callable[..., Case],
                                                http_recorder: HttpRecorder,
                                                captured_logs: list[str]) -> None:
    case = case_factory(retries=2)
    http_recorder.script(case.path, then=Reply(502, "bad gateway"))
    with pytest.raises(AlertDeliveryError) as raised:
        case.channel.send_alert(alert())
    assert len(http_recorder.requests(case.path)) == 3
    assert "502" in str(raised.value)
    assert_no_secret(raised.value, case.secret_values)
    assert captured_logs  # the retries were logged (so the check below is not vacuous)
    for secret in case.secret_values:
        assert not any(secret in line for line in captured_logs)


def test_server_down_fails_quickly_after_the_retries(case_factory: Callable[..., Case],
                                                     captured_logs: list[str]) -> None:
    case = case_factory(base=closed_port_url())
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as raised:
        case.channel.send_alert(alert())
    assert time.monotonic() - started < 5
    text = str(raised.value)
    assert "127.0.0.1:" in text and ("refused" in text.lower() or "Errno" in text)
    assert raised.value.__cause__ is None
    assert_no_secret(raised.value, case.secret_values)
    for secret in case.secret_values:
        assert not any(secret in line for line in captured_logs)


def test_a_failed_alert_in_a_run_leaks_no_secret(case_factory: Callable[..., Case]) -> None:
    """Through Dagster: the step's recorded error (with its causes) shows no secret."""
    case = case_factory(base=closed_port_url(), retries=0)

    @dg.asset
    def notify(channel: dg.ConfigurableResource) -> None:
        channel.send_alert(alert())  # type: ignore[attr-defined]

    result = dg.materialize([notify], resources={"channel": case.channel},
                            raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    recorded = failure.step_failure_data.error.to_string()
    assert "AlertDeliveryError" in recorded
    for secret in case.secret_values:
        assert secret not in recorded


# ---------------------------------------------------------------- the POST helper itself


def test_post_json_times_out_and_retries(http_recorder: HttpRecorder) -> None:
    path = f"{http_recorder.unique_path('slow')}/hook"
    http_recorder.script(path, Reply(200, delay_seconds=1.0), then=Reply(200, "done"))
    status, body = post_json(f"{http_recorder.url}{path}", {"a": 1}, {}, timeout=0.3,
                             retries=1, backoff_seconds=0.01, describe="test hook")
    assert (status, body) == (200, b"done")
    assert len(http_recorder.requests(path)) == 2


def test_post_json_does_not_follow_redirects(http_recorder: HttpRecorder) -> None:
    path = f"{http_recorder.unique_path('redirect')}/hook"
    target = f"{http_recorder.url}{path}-elsewhere"
    http_recorder.script(path, Reply(302, headers={"Location": target}))
    with pytest.raises(AlertDeliveryError, match="redirects are not followed"):
        post_json(f"{http_recorder.url}{path}", {"a": 1}, {}, timeout=5, retries=3,
                  backoff_seconds=0.01, describe="test hook")
    assert len(http_recorder.requests(path)) == 1
    assert http_recorder.requests(f"{path}-elsewhere") == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "not a url"])
def test_post_json_only_speaks_http(url: str) -> None:
    with pytest.raises(AlertDeliveryError, match="http:// or https://") as raised:
        post_json(url, {}, {}, timeout=1, retries=0, backoff_seconds=0, describe="test hook")
    assert url not in str(raised.value)


def test_post_json_body_is_sorted_compact_utf8() -> None:
    assert json_bytes({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize(("value", "low", "high"), [
    ("1", 1, 1), (" 2.5 ", 2.5, 2.5), ("-3", 0, 0), ("soon", None, None), (None, None, None),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0, 0)])
def test_retry_after_seconds(value: str | None, low: float | None, high: float | None) -> None:
    seconds = retry_after_seconds(value)
    if low is None:
        assert seconds is None
    else:
        assert seconds is not None and low <= seconds <= high


def test_retry_after_as_a_date_in_the_future() -> None:
    from email.utils import formatdate

    seconds = retry_after_seconds(formatdate(time.time() + 30, usegmt=True))
    assert seconds is not None and 28 <= seconds <= 31
