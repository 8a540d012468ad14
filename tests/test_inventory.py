"""The inventory reader on kubectl-format objects: what it keeps, and how it reports bad input."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ingest.inventory import Inventory, InventoryError


def pod(name: str, **meta: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", **meta},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"podIP": "10.1.0.5"}}


def listing(*items: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


def test_pod_becomes_an_endpoint_with_controller_owner() -> None:
    refs = [{"kind": "Node", "name": "n1"},
            {"kind": "ReplicaSet", "name": "web-5d8f7c9b4", "controller": True}]
    inv = Inventory.from_text(listing(
        {"kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}},
        pod("web-5d8f7c9b4-abcde", generateName="web-5d8f7c9b4-", ownerReferences=refs,
            labels={"app": "web"})), "inv.json")
    ep = inv.endpoint("shop/web-5d8f7c9b4-abcde")
    assert ep is not None
    assert inv.endpoint_for_ip(ipaddress.ip_address("10.1.0.5")) is ep
    assert inv.owners["shop/web-5d8f7c9b4-abcde"] == ("ReplicaSet", "web-5d8f7c9b4")
    assert ep.generate_name == "web-5d8f7c9b4-"
    assert ep.named_port("http", 6) == 8080 and ep.named_port("http", 17) is None
    assert ep.selector_labels["pcns.team"] == "a"
    assert ep.selector_labels["pcns.kubernetes.io/metadata.name"] == "shop"
    assert ep.selector_labels["projectcalico.org/serviceaccount"] == "default"


def test_host_network_pods_are_not_endpoints() -> None:
    p = pod("kube-proxy-x")
    p["spec"] = {"hostNetwork": True, "containers": []}
    assert Inventory.from_text(listing(p)).endpoints == ()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (pod("a", ownerReferences=["ReplicaSet/x"]),
         "inv.json: items[0].metadata.ownerReferences[0] must be a mapping (got 'ReplicaSet/x')"),
        (pod("a", ownerReferences=[{"kind": "ReplicaSet"}]),
         "inv.json: items[0].metadata.ownerReferences[0].name is required (got None)"),
        ({**pod("a"), "status": {"podIP": "10.1.0.500"}},
         "inv.json: items[0].status.podIP must be an IPv4 or IPv6 address (got '10.1.0.500')"),
        ({"kind": "Deployment", "metadata": {"name": "x"}},
         "inv.json: items[0].kind must be one of Namespace, Pod, Service, ServiceAccount "
         "(got 'Deployment')"),
    ],
)
def test_bad_objects_name_item_field_and_value(item: object, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        Inventory.from_text(listing(item), "inv.json")
    assert str(info.value) == message


def test_not_json_or_yaml() -> None:
    with pytest.raises(InventoryError) as info:
        Inventory.from_text("{", "inv.json")
    assert str(info.value).startswith("inv.json: is not valid JSON or YAML")


def test_service_backends_resolve_target_ports() -> None:
    web = pod("web-1", labels={"app": "web"})
    other = {**pod("web-2", labels={"app": "web"}), "status": {"podIP": "10.1.0.6"}}
    other["spec"] = {"containers": [{"name": "c"}]}  # no named port "http"
    svc = {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": "http"},
                              {"port": 81, "targetPort": 9000, "protocol": "UDP"}]}}
    inv = Inventory.from_text(listing(web, other, svc))
    ip = ipaddress.ip_address("10.96.0.20")
    found = inv.backends(ip, 80, 6)
    assert found is not None
    assert [(ep.name, port) for ep, port in found[2]] == [("web-1", 8080)]
    found = inv.backends(ip, 81, 17)
    assert found is not None
    assert [(ep.name, port) for ep, port in found[2]] == [("web-1", 9000), ("web-2", 9000)]
    assert inv.backends(ip, 81, 6) is None  # wrong protocol: no DNAT
    assert inv.backends(ipaddress.ip_address("10.96.0.21"), 80, 6) is None
