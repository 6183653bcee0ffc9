"""Workflow claims on a real Redis: which of many services a workflow holds, in one look."""

from __future__ import annotations

from services import RedisServer

from sslm_tasks.locks.claims import WorkflowClaims


def test_held_names_exactly_the_claims_that_are_taken(redis_server: RedisServer) -> None:
    # Given 1,000 services of which every hundredth is claimed by a workflow
    claims = WorkflowClaims(redis_server.client(), ttl_s=60)
    names = [f"workflow:bench.example:svc{i:03d}" for i in range(1000)]
    taken = names[::100]
    for name in taken:
        assert claims.claim(name, owner="root-task") is None
    # When a scan asks which of them are held
    held = claims.held(names)
    # Then it gets those, and only those; asking about none asks Redis nothing
    assert held == set(taken)
    assert claims.held([]) == set()
