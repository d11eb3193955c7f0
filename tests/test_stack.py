"""The servers that ``scripts/stack.sh up`` starts are really usable.

Needs the stack up (``make test`` runs ``scripts/stack.sh up`` first). Without it these tests
fail with a hint (``make test`` starts the stack first).
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import uuid

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STACK_SH = REPO_ROOT / "scripts" / "stack.sh"

KAFKA_BOOTSTRAP = os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PG_DSN = os.environ.get(
    "STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens"
)
REDIS_URL = os.environ.get("STORELENS_REDIS_URL", "redis://127.0.0.1:16379/0")

FRAME_BYTES = 5 * 1024 * 1024  # a large JPEG frame


def _kafka_config():
    from storelens.config import KafkaConfig

    return KafkaConfig(bootstrap_servers=KAFKA_BOOTSTRAP)


def _unavailable(what: str, err: Exception) -> None:
    # `make test` starts the stack; a missing server is a failure, never a skip.
    pytest.fail(f"{what} is not reachable ({err}); start the stack with: scripts/stack.sh up (make test does)")


def _frame(seed: str) -> bytes:
    """FRAME_BYTES of deterministic, incompressible-looking bytes."""
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    i = 0
    while len(out) < FRAME_BYTES:
        out += hashlib.sha256(block[:64] + i.to_bytes(4, "big")).digest() + block[32:]
        i += 1
    return bytes(out[:FRAME_BYTES])


@pytest.fixture(scope="module")
def kafka_admin():
    from storelens.runtime.kafka import BrokerError, KafkaAdmin

    admin = KafkaAdmin(_kafka_config())
    try:
        admin.list_topics(timeout=10)
    except BrokerError as err:
        _unavailable(f"Kafka at {KAFKA_BOOTSTRAP}", err)
    yield admin
    admin.close()


def _create_topic(admin, name: str, partitions: int = 1) -> None:
    from aiokafka.admin import NewTopic

    assert admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)], 60) == [name]


def _delete_topic(admin, name: str) -> None:
    try:
        admin.delete_topics([name], 60)
    except Exception:  # best effort
        pass


def _produce(topic: str, key: bytes, value: bytes, timeout_s: float = 60.0) -> tuple[int, int]:
    """Produce one message to partition 0 (idempotent, acks=all) and wait for the ack: (partition, offset)."""
    from storelens.runtime.kafka import KafkaBus

    bus = KafkaBus(_kafka_config(), f"test-stack-{uuid.uuid4().hex[:8]}")
    try:
        return bus.publish_wait(topic, key, value, partition=0, timeout_s=timeout_s)
    finally:
        bus.close()


class _Message:
    """A consumed message with the accessors of a client message (``key()``, ``value()``, ...)."""

    def __init__(self, msg) -> None:
        self._msg = msg

    def key(self) -> bytes:
        return self._msg.key

    def value(self) -> bytes:
        return self._msg.value

    def partition(self) -> int:
        return self._msg.partition

    def offset(self) -> int:
        return self._msg.offset


def _consume_one(topic: str, timeout: float = 60.0):
    from storelens.runtime.kafka import consume_all

    msgs = consume_all(_kafka_config(), topic, timeout_s=timeout, expect=1)
    if not msgs:
        pytest.fail(f"no message on {topic} within {timeout:.0f} s")
    return _Message(msgs[0])


def test_kafka_broker_is_sized_for_frames(kafka_admin):
    md = kafka_admin.list_topics(timeout=10)
    assert len(md.brokers) == 1
    broker_id = next(iter(md.brokers))
    value = kafka_admin.broker_config(broker_id, 30)
    assert int(value["message.max.bytes"]) == 8 * 1024 * 1024
    assert int(value["replica.fetch.max.bytes"]) >= int(value["message.max.bytes"])
    assert int(value["socket.request.max.bytes"]) >= int(value["message.max.bytes"])
    assert value["auto.create.topics.enable"] == "false"
    assert value["num.partitions"] == "6"
    assert value["process.roles"] == "broker,controller"


def test_kafka_round_trips_a_5mib_message(kafka_admin):
    topic = f"test-stack-{uuid.uuid4().hex[:12]}"
    _create_topic(kafka_admin, topic)
    try:
        payload = _frame(topic)
        _produce(topic, b"cam-1", payload)
        msg = _consume_one(topic)
        assert msg.key() == b"cam-1"
        assert len(msg.value()) == FRAME_BYTES
        assert hashlib.sha256(msg.value()).digest() == hashlib.sha256(payload).digest()
    finally:
        _delete_topic(kafka_admin, topic)


def test_kafka_does_not_auto_create_topics(kafka_admin):
    from storelens.runtime.kafka import BrokerError

    topic = f"test-stack-undeclared-{uuid.uuid4().hex[:8]}"
    errors: list = []
    try:
        _produce(topic, None, b"x", timeout_s=2)
    except BrokerError as err:
        errors.append(err)
    assert errors and errors[0] is not None
    assert topic not in kafka_admin.list_topics(timeout=10).topics


def test_postgres_round_trip():
    import psycopg

    try:
        conn = psycopg.connect(PG_DSN, connect_timeout=10)
    except psycopg.OperationalError as err:
        _unavailable(f"PostgreSQL at {PG_DSN}", err)
    with conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("storelens", "storelens")
        conn.execute("CREATE TEMP TABLE visits (id serial PRIMARY KEY, camera text, n int)")
        conn.execute(
            "INSERT INTO visits (camera, n) VALUES (%s, %s), (%s, %s)", ("cam-1", 3, "cam-2", 4)
        )
        total = conn.execute("SELECT sum(n) FROM visits").fetchone()[0]
        assert total == 7


def test_redis_set_get():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as err:
        _unavailable(f"Redis at {REDIS_URL}", err)
    key = f"test-stack:{uuid.uuid4().hex}"
    try:
        assert client.set(key, b"\x00occupancy=12", ex=60)
        assert client.get(key) == b"\x00occupancy=12"
    finally:
        client.delete(key)
        client.close()


@pytest.mark.serial
@pytest.mark.timeout(400)
def test_kafka_restart_keeps_topics_and_messages(kafka_admin):
    from storelens.runtime.kafka import KafkaAdmin

    pid_file = REPO_ROOT / ".stack" / "kafka" / "kafka.pid"
    if not pid_file.exists():
        pytest.skip("the Kafka broker was not started by scripts/stack.sh in this checkout")
    topic = f"test-stack-restart-{uuid.uuid4().hex[:12]}"
    _create_topic(kafka_admin, topic, partitions=6)
    try:
        payload = _frame(topic)
        partition, offset = _produce(topic, b"cam-restart", payload)
        pid_before = pid_file.read_text().strip()

        result = subprocess.run(
            [str(STACK_SH), "restart", "kafka"],
            capture_output=True, text=True, timeout=360,
        )
        assert result.returncode == 0, f"restart failed:\n{result.stdout}\n{result.stderr}"
        assert pid_file.read_text().strip() != pid_before, "the broker was not restarted"

        admin = KafkaAdmin(_kafka_config())
        md = admin.list_topics(timeout=30)
        assert topic in md.topics
        assert len(md.topics[topic].partitions) == 6
        msg = _consume_one(topic, timeout=90)
        assert (msg.partition(), msg.offset()) == (partition, offset)
        assert msg.key() == b"cam-restart"
        assert hashlib.sha256(msg.value()).digest() == hashlib.sha256(payload).digest()
    finally:
        _delete_topic(kafka_admin, topic)
