"""Issue 14: the documents the gateway serves, built from the code (`backroom apidocs`)."""

import re
from functools import cache
from pathlib import Path
from typing import Any

from libs.events import topics
from libs.events.envelope import new_event, schema_path
from libs.events.registry import EVENT_TYPES
from libs.kit.apidocs import (
    GATEWAY_PREFIXES,
    asyncapi_document,
    event_schema,
    merge_openapi,
    write_site,
)
from libs.kit.cli import build_parser, service_openapi_documents

ROOT = Path(__file__).resolve().parents[3]
LOCAL_NGINX = ROOT / "deploy" / "local" / "nginx" / "nginx.conf.tmpl"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@cache
def service_docs() -> dict[str, dict[str, Any]]:
    return service_openapi_documents()


@cache
def merged() -> dict[str, Any]:
    return merge_openapi(service_docs())


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def test_the_gateway_prefixes_are_the_nginx_routes() -> None:
    text = LOCAL_NGINX.read_text()
    proxied = set(re.findall(r"location\s+(/\w+)\s*\{\s*proxy_pass", text))
    assert proxied == set(GATEWAY_PREFIXES)


def test_every_public_route_of_every_service_is_in_the_merged_document_once() -> None:
    doc = merged()
    assert doc["openapi"] == "3.1.0"
    expected = {
        (method, path)
        for service_doc in service_docs().values()
        for method, path, _ in operations(service_doc)
        if any(path == p or path.startswith(p + "/") for p in GATEWAY_PREFIXES)
    }
    assert {(m, p) for m, p, _ in operations(doc)} == expected
    assert not any(p.startswith(("/health", "/metrics")) for p in doc["paths"])
    prefixes = {"/" + p.split("/")[1] for p in doc["paths"]}
    assert prefixes == set(GATEWAY_PREFIXES)
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_refs_resolve_and_every_error_is_problem_json() -> None:
    doc = merged()
    text = str(doc)
    for name in set(re.findall(r"#/components/schemas/([\w.-]+)", text)):
        assert name in doc["components"]["schemas"], name
    for method, path, op in operations(doc):
        assert {"422", "429", "502", "503", "504"} <= set(op["responses"]), (method, path)
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert set(response["content"]) == {"application/problem+json"}, (path, code)
                ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Problem"


def test_the_bearer_scheme_and_the_auth_statuses_follow_the_routes_dependencies() -> None:
    doc = merged()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    place = doc["paths"]["/orders"]["post"]
    assert place["security"] == [{"bearer": []}]
    assert {"401", "403", "409", "413"} <= set(place["responses"])
    admin_only = doc["paths"]["/pricing/prices/{sku}"]["put"]
    assert admin_only["security"] == [{"bearer": []}] and "403" in admin_only["responses"]
    public = doc["paths"]["/pricing/shipping-methods"]["get"]
    assert "security" not in public and "401" not in public["responses"]
    by_id = doc["paths"]["/orders/{order_id}"]["get"]
    assert "404" in by_id["responses"]
    paged = doc["paths"]["/orders"]["get"]
    assert "400" in paged["responses"]  # a cursor that does not decode


def test_strings_a_client_sends_document_the_control_character_rule() -> None:
    doc = merged()
    sku = next(
        p
        for p in doc["paths"]["/catalog/products/{sku}"]["get"]["parameters"]
        if p["name"] == "sku"
    )
    assert re.fullmatch(sku["schema"]["pattern"], "MUG-1")
    assert not re.fullmatch(sku["schema"]["pattern"], "MUG\x00")


def test_asyncapi_lists_every_event_type_on_its_topic_with_key_and_headers() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    messages = doc["components"]["messages"]
    assert set(messages) == set(EVENT_TYPES)
    by_address = {c["address"]: c for c in doc["channels"].values()}
    for topic in topics.ALL_TOPICS:
        assert topic in by_address and topics.dlq(topic) in by_address
    assert topics.LISTINGS_PREFIX + "{channel}" in by_address
    for event_type, (topic, _) in EVENT_TYPES.items():
        address = topics.LISTINGS_PREFIX + "{channel}" if event_type == "ListingChanged" else topic
        assert event_type in by_address[address]["messages"], event_type
        message = messages[event_type]
        assert "key" in message["bindings"]["kafka"]
        assert message["headers"] == {"$ref": "#/components/schemas/KafkaHeaders"}
        extra = message["payload"]["allOf"][1]["properties"]
        assert extra["dataschema"] == {"const": schema_path(event_type)}
    headers = doc["components"]["schemas"]["KafkaHeaders"]["properties"]
    assert {"ce_id", "ce_type", "content-type"} <= set(headers)
    text = str(doc)
    for name in set(re.findall(r"#/components/schemas/([\w.-]+)", text)):
        assert name in doc["components"]["schemas"], name
    for operation in doc["operations"].values():
        assert operation["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]


def test_every_emitted_event_names_its_schema_and_the_schema_is_the_models() -> None:
    for event_type, (_, model) in EVENT_TYPES.items():
        schema = event_schema(event_type)
        assert schema["$id"] == schema_path(event_type)
        assert schema["properties"] == model.model_json_schema()["properties"]
    event = new_event(
        service="catalog", data=EVENT_TYPES["StockLow"][1].model_construct(), subject="S"
    )
    assert event.dataschema == "/schemas/events/StockLow.json"


def test_the_site_holds_the_documents_pages_schemas_and_local_assets(tmp_path: Path) -> None:
    written = {p.relative_to(tmp_path).as_posix() for p in write_site(tmp_path, service_docs())}
    assert {"openapi.json", "asyncapi.json", "asyncapi.html", "docs/index.html"} <= written
    assert {f"schemas/events/{t}.json" for t in EVENT_TYPES} <= written
    page = (tmp_path / "docs" / "index.html").read_text()
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page):
        assert asset.removeprefix("/") in written, asset
    assert "https://" not in page and "http://" not in page
    assert "OrderPlaced" in (tmp_path / "asyncapi.html").read_text()
    assert build_parser().parse_args(["apidocs", "--out", str(tmp_path)]).out == str(tmp_path)
