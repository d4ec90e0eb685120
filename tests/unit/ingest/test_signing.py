"""Standard Webhooks signatures: the specification's test vector, and what the reference
verifier (`standardwebhooks`, unchanged) accepts."""

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from ingest.webhooks.signing import decode_secret, generate_secret, sign, signed_headers

# From the Standard Webhooks specification's test vectors.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signer_reproduces_the_standard_webhooks_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_reference_library_agrees_with_the_test_vector():
    # Guards the vector itself: if this failed, the constant above would be wrong, not our signer.
    when = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, when, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


def now_ts() -> int:
    return int(datetime.now(UTC).timestamp())


@given(body=st.text(max_size=500), msg_id=st.from_regex(r"evt_[a-z0-9]{1,40}", fullmatch=True))
def test_reference_verifier_accepts_what_we_sign(body, msg_id):
    secret = generate_secret()
    headers = signed_headers((secret,), msg_id, now_ts(), body.encode())
    Webhook(secret).verify(body.encode(), headers, json_parse=False)


def test_both_secrets_of_a_rotation_verify_and_a_third_does_not():
    new, old, stranger = generate_secret(), generate_secret(), generate_secret()
    body = b'{"type": "webhook.test"}'
    headers = signed_headers((new, old), "evt_1", now_ts(), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


def test_a_changed_body_does_not_verify():
    secret = generate_secret()
    headers = signed_headers((secret,), "evt_1", now_ts(), b'{"a": 1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a": 2}', headers)


def test_generated_secrets_are_whsec_base64_of_32_random_bytes():
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_") and len(decode_secret(secret)) == 32


@pytest.mark.parametrize(
    "secret",
    [
        "abc",
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
    ],
)
def test_malformed_secrets_are_refused(secret):
    with pytest.raises(ValueError):
        decode_secret(secret)


def test_unpadded_secret_decodes_as_the_reference_library_does():
    padded = "whsec_" + base64.b64encode(bytes(range(25))).decode()
    assert padded.endswith("=")
    assert decode_secret(padded.rstrip("=")) == bytes(range(25))
