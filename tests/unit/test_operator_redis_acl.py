"""The operator's ACL SAVE after it changes a workspace's Redis user, against a real
redis-server: saved to the server's aclfile when it has one (so a restarted Redis has the
user at once), "no aclfile" is fine (a Redis you run; the Workspace timer restores users
there), and any other failure to save is an error the Workspace's status reports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from codemode_operator import redis_acl

from tests.conftest import RedisServer, free_port

pytestmark = pytest.mark.redis


class AclFileRedis(RedisServer):
    """redis-server with an aclfile in `workdir`, as the chart's bundled Redis runs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.aclfile = workdir / "users.acl"
        self.aclfile.write_text("user default on nopass ~* &* +@all\n")
        super().__init__(workdir, extra_args=["--aclfile", str(self.aclfile)])

    def saved_users(self) -> list[str]:
        return sorted(line.split()[1] for line in self.aclfile.read_text().splitlines() if line)


@pytest.fixture
def aclfile_redis(tmp_path: Path) -> Iterator[AclFileRedis]:
    server = AclFileRedis(tmp_path)
    yield server
    server.stop()


def test_without_an_aclfile_saving_is_skipped_and_provisioning_works(
    redis_server: RedisServer,
) -> None:
    user = redis_acl.acl_username("acl-save", f"ws-{free_port()}")
    try:
        with redis.Redis.from_url(redis_server.url) as admin:
            assert redis_acl.save_acl(admin) is False
        redis_acl.provision(redis_server.url, user, "pw", "cm", "ws")
        with redis.Redis.from_url(redis_server.url) as admin:
            assert admin.execute_command("ACL", "GETUSER", user) is not None
    finally:
        redis_acl.deprovision(redis_server.url, user)
    with redis.Redis.from_url(redis_server.url) as admin:
        assert admin.execute_command("ACL", "GETUSER", user) is None


def test_changes_are_saved_to_the_aclfile(aclfile_redis: AclFileRedis) -> None:
    url = aclfile_redis.url
    user = redis_acl.acl_username("team", "ws")
    redis_acl.provision(url, user, "pw-1", "cm", "ws")
    assert aclfile_redis.saved_users() == sorted(["default", user])

    # Nothing changed: the periodic reconcile writes no file (one SAVE rewrites every
    # workspace's user). A marker line in the file shows whether it was rewritten.
    with aclfile_redis.aclfile.open("a") as f:
        f.write("user marker off\n")
    redis_acl.provision(url, user, "pw-1", "cm", "ws")
    assert "marker" in aclfile_redis.saved_users()

    # A new password, and a user Redis lost (a restart without the file): saved again.
    redis_acl.provision(url, user, "pw-2", "cm", "ws")
    assert aclfile_redis.saved_users() == sorted(["default", user])
    with redis.Redis.from_url(url) as admin:
        admin.execute_command("ACL", "DELUSER", user)
        admin.execute_command("ACL", "SAVE")
    assert aclfile_redis.saved_users() == ["default"]
    redis_acl.provision(url, user, "pw-2", "cm", "ws")
    assert aclfile_redis.saved_users() == sorted(["default", user])

    redis_acl.deprovision(url, user)
    assert aclfile_redis.saved_users() == ["default"]


def test_a_failed_save_is_an_error(aclfile_redis: AclFileRedis) -> None:
    """Redis cannot write the file (its folder is gone): the operator must not report a
    user that will not survive a restart as provisioned."""
    shutil.rmtree(aclfile_redis.workdir)
    with pytest.raises(redis.ResponseError, match=r"(?i)acl"):
        redis_acl.provision(
            aclfile_redis.url, redis_acl.acl_username("team", "lost"), "pw", "cm", "lost"
        )
