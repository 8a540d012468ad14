"""The replay proof over grouped records: recommend/sql/records.sql gives one row per distinct
record with how many records it stands for, and replaying those rows must give exactly the
proof that replaying every record one by one gives: counts, connections, records allowed by
representative address, and each failure's records and connections.
"""

from __future__ import annotations

from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from test_recommend_scenarios import (
    API_EP,
    PG_EP,
    POLICIES,
    PVT,
    WEB_EP,
    WINDOW,
    both,
    flow,
    inventory,
    run,
    write_store,
)

from analytics.db import connect, query
from policy import Document, PolicySet, load_text
from recommend.observe import Query, records
from recommend.verify import enforced_set, replay

# The reference: every record recommendation learns from, one row each, with the reporter
# reduced to its end as records.sql does it.
EACH_RECORD = """
SELECT * REPLACE (CASE direction WHEN 'egress' THEN 'src' ELSE 'dst' END AS reporter)
FROM tf_recommend_records($since, $until, 'shop', NULL)
"""


def repeated_rows() -> list[dict[str, Any]]:
    """Every five minutes of an hour the same traffic (so the same keys), with varying
    connection counts; one transit-reported record among them."""
    rows = []
    for minute in range(0, 60, 5):
        rows += both(WEB_EP, API_EP, 8080, flows=1 + minute % 3, minutes=minute)
        rows.append(flow(WEB_EP, PG_EP, 5432, flows=2 + minute % 2, minutes=minute))
        rows.append(flow(API_EP, PVT, 5000, flows=1 + minute % 4, minutes=minute))
    rows.append(flow(WEB_EP, PG_EP, 5432, reporter="src,fwd", flows=7))
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("verify") / "store", repeated_rows())


def each_record(q: Query) -> pa.Table:
    q(resources.files("recommend").joinpath("sql", "macros.sql").read_text(), None)
    return q(EACH_RECORD, WINDOW.parameters())


def without_database(store: Path) -> list[Document]:
    """The recommendation for the store with web's egress to postgres left out."""
    docs: list[Document] = []
    for o in run(store).outputs:
        doc = yaml.safe_load(o.text)
        if o.name == "default.web":
            doc["spec"]["egress"] = [r for r in doc["spec"]["egress"]
                                     if "postgres" not in str(r)]
        docs += load_text(yaml.safe_dump(doc))
    return docs


def test_grouped_replay_gives_the_proof_of_replaying_every_record(store: Path) -> None:
    q = partial(query, connect(store))
    grouped, every = records(q, WINDOW, "shop"), each_record(q)
    # web -> api from both ends, web -> postgres (the transit record among them), api -> pvt
    assert (grouped.num_rows, every.num_rows) == (4, 49)
    policies = enforced_set(PolicySet.from_documents(load_text(POLICIES)),
                            without_database(store))
    proof = replay(grouped, policies, inventory())
    assert proof == replay(every, policies, inventory())
    assert (proof.records, proof.connections) == (49, 48 + 30 + 30 + 7)
    # the postgres records are denied (the transit one too); the pvt ones are allowed for
    # an address of every RFC 1918 block
    [failure] = proof.failures
    assert (failure.records, failure.connections) == (13, 30 + 7)
    assert (proof.allowed_records, proof.representative) == (49 - 13, 12)
    assert str(failure).endswith("deny by 0|default|shop/default.web|deny|-1 "
                                 "(37 connection(s) in 13 record(s))")


def test_an_unbroken_recommendation_passes_on_the_grouped_records(store: Path) -> None:
    proof = run(store).proof
    assert proof.passed
    assert (proof.records, proof.allowed_records, proof.representative) == (49, 49, 12)
    assert proof.connections == proof.allowed_connections == 115
